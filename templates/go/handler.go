package kubeless

import (
	"fmt"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler answers every call. event.Data is the request body as a string; event.Extensions holds
// the *http.Request, the http.ResponseWriter and a context.Context that is cancelled when the
// function's timeout fires: check it in long-running work.
func Handler(event functions.Event, context functions.Context) (string, error) {
	if event.Data == "" {
		return "hello world", nil
	}
	return fmt.Sprintf("hello, you sent: %s", event.Data), nil
}
