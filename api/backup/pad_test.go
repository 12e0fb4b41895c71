package backup

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// TestPadToAligns: for data of every length around a few multiples of 512
// and metadata of several sizes, PadTo makes the file 32 bytes more than a
// multiple of 512 (what etcd's snapshot tools look for), and the padded
// file opens with its data intact.
func TestPadToAligns(t *testing.T) {
	dir := t.TempDir()
	for _, cluster := range []string{"", "00000000000000ff", string(bytes.Repeat([]byte("c"), 300))} {
		for _, n := range []int{0, 1, 100, 511, 512, 513, 1000, 4096, 70000} {
			data := bytes.Repeat([]byte{7}, n)
			info := &apipb.SnapshotInfo{AppliedIndex: 5, ClusterId: cluster, Size: uint64(n)}
			PadTo(info, 512)
			path := filepath.Join(dir, "p.kvb")
			_, size, err := WriteFile(path, info, bytes.NewReader(data))
			require.NoError(t, err)
			require.Equal(t, int64(SumSize), size%512, "data %d bytes, cluster id %d bytes", n, len(cluster))
			head, err := Header(info)
			require.NoError(t, err)
			require.Equal(t, size, int64(len(head))+int64(n)+SumSize)
			f, err := Open(path)
			require.NoError(t, err)
			require.Equal(t, uint64(5), f.Info.AppliedIndex)
			got := new(bytes.Buffer)
			_, err = got.ReadFrom(f.Data())
			require.NoError(t, err)
			require.Equal(t, data, got.Bytes())
			require.NoError(t, f.Close())
		}
	}
}
