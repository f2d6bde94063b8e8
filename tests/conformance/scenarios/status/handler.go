package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

// Writes the response itself through Extensions.Response; the server then writes nothing more.
func Handler(event functions.Event, context functions.Context) (string, error) {
	w := event.Extensions.Response
	w.Header().Set("X-Custom", "yes")
	w.WriteHeader(201)
	_, err := w.Write([]byte("created"))
	return "", err
}
