package kubeless

import (
	"strconv"

	"github.com/kubeless/kubeless/pkg/functions"
)

func Handler(event functions.Event, context functions.Context) (string, error) {
	return strconv.Itoa(len(event.Data)), nil
}
