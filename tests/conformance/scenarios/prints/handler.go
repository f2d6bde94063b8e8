package kubeless

import (
	"fmt"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler prints a line naming its data, then answers the data.
func Handler(event functions.Event, context functions.Context) (string, error) {
	fmt.Println("handling " + event.Data)
	return event.Data, nil
}
