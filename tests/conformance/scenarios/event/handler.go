package kubeless

import (
	"encoding/json"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Go's Event holds "" for an absent header (as in Kubeless).
func Handler(event functions.Event, context functions.Context) (string, error) {
	out, err := json.Marshal(map[string]string{
		"data":            event.Data,
		"event-id":        event.EventID,
		"event-type":      event.EventType,
		"event-time":      event.EventTime,
		"event-namespace": event.EventNamespace,
	})
	return string(out), err
}
