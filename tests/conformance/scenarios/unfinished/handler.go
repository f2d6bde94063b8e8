package kubeless

import (
	"fmt"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler prints a line it does not end (no newline): the runtime's access line follows it on stdout.
func Handler(event functions.Event, context functions.Context) (string, error) {
	fmt.Print("no newline here")
	return "done", nil
}
