package kubeless

import (
	"strconv"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// A blocking sleep that ignores event.Extensions.Context, like time.sleep in the other languages.
func Handler(event functions.Event, context functions.Context) (string, error) {
	seconds, err := strconv.ParseFloat(event.Data, 64)
	if err != nil {
		return "", err
	}
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	return "done", nil
}
