package kubeless

import (
	"fmt"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Output at load without a newline: the runtime's next line (in the pod, its log's next line) follows it.
func init() {
	fmt.Print("loading config...")
}

// Handler answers as hello does.
func Handler(event functions.Event, context functions.Context) (string, error) {
	return "hello world", nil
}
