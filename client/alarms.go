package client

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// Alarm is an alarm raised in the cluster's replicated state.
type Alarm struct {
	Type     string // "NOSPACE"
	MemberID uint64 // the member that raised it
	Index    uint64 // the log index it was raised at
}

// Alarms is the answer to AlarmList: the raised alarms and the figures of
// the limits they are about, as one member sees them.
type Alarms struct {
	Endpoint    string
	Alarms      []Alarm
	StoreBytes  uint64 // the store's size as the quota counts it
	QuotaBytes  uint64 // the member's --quota-backend-bytes
	Sessions    uint64 // open exactly-once sessions
	MaxSessions uint64 // the member's --max-sessions
}

// AlarmList lists the raised alarms (linearizably).
func (c *Client) AlarmList(ctx context.Context) (Alarms, error) {
	var out Alarms
	err := c.onSomeMember(ctx, "alarm list", func(ctx context.Context, conn *grpc.ClientConn, ep string) error {
		r, err := apipb.NewMaintenanceClient(conn).AlarmList(ctx, &apipb.AlarmListRequest{})
		if err != nil {
			return err
		}
		out = Alarms{Endpoint: ep, StoreBytes: r.StoreBytes, QuotaBytes: r.QuotaBytes, Sessions: r.Sessions, MaxSessions: r.MaxSessions}
		for _, a := range r.Alarms {
			out.Alarms = append(out.Alarms, alarmOf(a))
		}
		return nil
	})
	return out, err
}

// AlarmDisarm clears the alarm named typ ("NOSPACE", in any case) on every
// member, and returns it (nil if it was not raised). A NOSPACE alarm
// disarmed while the store is still over its quota is raised again by the
// next write that would pass it: free space first.
func (c *Client) AlarmDisarm(ctx context.Context, typ string) (*Alarm, error) {
	t, ok := apipb.AlarmType_value["ALARM_TYPE_"+strings.ToUpper(typ)]
	if !ok || t == 0 {
		return nil, fmt.Errorf("alarm disarm: unknown alarm %q: the only alarm is NOSPACE", typ)
	}
	var out *Alarm
	err := c.onSomeMember(ctx, "alarm disarm", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
		r, err := apipb.NewMaintenanceClient(conn).AlarmDisarm(ctx, &apipb.AlarmDisarmRequest{Type: apipb.AlarmType(t)})
		if err == nil && r.Disarmed != nil {
			a := alarmOf(r.Disarmed)
			out = &a
		}
		return err
	})
	return out, err
}

func alarmOf(a *apipb.Alarm) Alarm {
	return Alarm{Type: strings.TrimPrefix(a.Type.String(), "ALARM_TYPE_"), MemberID: a.MemberId, Index: a.Index}
}
