package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

func Handler(event functions.Event, context functions.Context) (string, error) {
	r := event.Extensions.Request
	return r.Header.Get("X-Test") + "|" + r.URL.Query().Get("q"), nil
}
