package kubeless

import (
	"strconv"
	"sync/atomic"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Package state lives as long as the server process (calls run concurrently: atomic).
var calls atomic.Int64

func Handler(event functions.Event, context functions.Context) (string, error) {
	return strconv.FormatInt(calls.Add(1), 10), nil
}
