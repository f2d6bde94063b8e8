package kubeless

import (
	"encoding/json"

	"github.com/kubeless/kubeless/pkg/functions"
)

func Handler(event functions.Event, context functions.Context) (string, error) {
	// Go's Event has "" for an absent header; report absence as null like the other languages.
	header := func(name, value string) any {
		if _, ok := event.Extensions.Request.Header[name]; !ok {
			return nil
		}
		return value
	}
	out, err := json.Marshal(map[string]any{
		"data":            event.Data,
		"event-id":        header("Event-Id", event.EventID),
		"event-type":      header("Event-Type", event.EventType),
		"event-time":      header("Event-Time", event.EventTime),
		"event-namespace": header("Event-Namespace", event.EventNamespace),
	})
	return string(out), err
}
