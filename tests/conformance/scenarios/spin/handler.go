package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

// Burns CPU forever and never looks at event.Extensions.Context.
func Handler(event functions.Event, context functions.Context) (string, error) {
	for {
	}
}
