package kubeless

import (
	"encoding/json"
	"os"

	"github.com/kubeless/kubeless/pkg/functions"
)

func Handler(event functions.Event, context functions.Context) (string, error) {
	var env any
	if v, ok := os.LookupEnv("MY_VAR"); ok {
		env = v
	}
	var hostname any
	if v, ok := os.LookupEnv("HOSTNAME"); ok {
		hostname = v
	}
	out, err := json.Marshal(map[string]any{
		"function-name": context.FunctionName,
		"timeout":       context.Timeout,
		"runtime":       context.Runtime,
		"memory-limit":  context.MemoryLimit,
		"env":           env,
		"hostname":      hostname,
	})
	return string(out), err
}
