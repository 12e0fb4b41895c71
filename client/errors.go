package client

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors callers test with errors.Is. Every error a Client returns is one of:
//   - a *StatusError (the server refused the request; never retried), which
//     matches ErrInvalid when the server said the input was bad;
//   - an *UnavailableError (every attempt failed with a transient error),
//     which matches ErrUnavailable;
//   - an error wrapping context.DeadlineExceeded or context.Canceled (the
//     caller's deadline, or RequestTimeout, ran out first);
//   - ErrOutcomeUnknown, ErrClosed, or a configuration error from New.
var (
	// ErrInvalid: the server rejected the input (empty key, key, value or
	// request over a limit). Retrying the same request cannot succeed.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: no member answered, or none had a leader, within the
	// retries allowed (UnavailableError.Diagnosis says which).
	ErrUnavailable = errors.New("no member answered or no leader")
	// ErrOutcomeUnknown: a write's session expired on the server after an
	// earlier attempt of that write may have been applied, so the client
	// cannot retry it without risking applying it twice.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client closed")
	// ErrSessionLimit: the cluster has as many sessions open as
	// --max-sessions allows and none idle long enough to reclaim; a write
	// could not get a session before its deadline. Retry later.
	ErrSessionLimit = errors.New("session cap reached")
	// ErrNoSpace: the cluster reached its storage quota (the NOSPACE
	// alarm): puts and compare-and-swaps are refused, deletes are not.
	// Free space, then disarm the alarm (Client.AlarmDisarm).
	ErrNoSpace = errors.New("no space")
)

// StatusError is a refusal from a server: a gRPC status the client does not
// retry. Message is the server's own text, meant for a person.
type StatusError struct {
	Op       string // "put", "get", ...
	Endpoint string // the member that answered
	Code     codes.Code
	Message  string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s refused (%s): %s", e.Op, e.Endpoint, e.Code, e.Message)
}

// Is makes errors.Is(err, ErrInvalid) true for InvalidArgument refusals,
// and errors.Is(err, ErrNoSpace) or ErrSessionLimit for the refusals of
// those limits.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Code == codes.InvalidArgument
	case ErrNoSpace:
		return e.Code == codes.ResourceExhausted && strings.HasPrefix(e.Message, "no space")
	case ErrSessionLimit:
		return e.Code == codes.ResourceExhausted && strings.HasPrefix(e.Message, "session cap reached")
	}
	return false
}

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *StatusError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// UnavailableError says every attempt failed with a transient error (no
// member reachable, no leader, leader changed) and the retry budget ran out.
type UnavailableError struct {
	Op        string
	Endpoints []string // every configured endpoint
	// Answered are the endpoints that answered but could not serve the
	// call (no leader known, leader changed): reachable members without a
	// working leader. Empty when no member answered at all.
	Answered []string
	Attempts int
	Last     error // the last attempt's error, as gRPC reported it
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s: %s after %d attempts: last error: %v", e.Op, e.Diagnosis(), e.Attempts, e.Last)
}

// Diagnosis says in a line why the call could not be served: no member
// answered at all, or some did but none had a leader, which is what
// members that cannot reach a majority of the cluster say.
func (e *UnavailableError) Diagnosis() string {
	if len(e.Answered) == 0 {
		return "no member answered at " + strings.Join(e.Endpoints, ", ")
	}
	return fmt.Sprintf("no leader: a quorum of members is not reachable (%d of %d answered: %s)",
		len(e.Answered), len(e.Endpoints), strings.Join(e.Answered, ", "))
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns the last attempt's error.
func (e *UnavailableError) Unwrap() error { return e.Last }

// errorClass says what the retry loop does after a failed attempt.
type errorClass uint8

const (
	// classFatal: a refusal; return it to the caller.
	classFatal errorClass = iota
	// classRetry: transient; retry with the same session and seq, on the
	// next endpoint.
	classRetry
	// classSessionExpired: the server does not know the session; register
	// a new one. The refused attempt was not applied.
	classSessionExpired
)

// classify sorts an attempt's error. The caller has already checked whether
// its own context is done, so DeadlineExceeded and Canceled here come from a
// per-attempt timeout or from the server side, and are worth retrying.
func classify(err error) (errorClass, *status.Status) {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return classRetry, st
	case codes.FailedPrecondition:
		if strings.Contains(st.Message(), "session expired") {
			return classSessionExpired, st
		}
	}
	return classFatal, st
}
