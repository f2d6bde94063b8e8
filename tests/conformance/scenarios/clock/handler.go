package kubeless

import (
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler: the offset of the local time zone from UTC, as +HHMM: a pod's is +0000 (no TZ, the image's UTC).
func Handler(event functions.Event, context functions.Context) (string, error) {
	return time.Now().Format("-0700"), nil
}
