package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

// Go receives the body as a raw string (no JSON parsing), so echo returns it as is.
func Handler(event functions.Event, context functions.Context) (string, error) {
	return event.Data, nil
}
