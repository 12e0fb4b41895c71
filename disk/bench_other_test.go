//go:build !linux

package disk

func onTmpfs(string) bool { return false }
