package kubeless

import (
	"errors"

	"github.com/kubeless/kubeless/pkg/functions"
)

// "boom" returns an error (the Go way); "panic" panics (legacy Kubeless crashed on a panic).
func Handler(event functions.Event, context functions.Context) (string, error) {
	switch event.Data {
	case "boom":
		return "", errors.New("boom")
	case "panic":
		panic("boom")
	}
	return "ok", nil
}
