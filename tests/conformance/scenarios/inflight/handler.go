package kubeless

import (
	"os"
	"strings"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Waits (up to 60 s) until the file named by the body exists, then returns data.txt read by a path
// relative to the working folder: a call still in flight while the code is saved.
func Handler(event functions.Event, context functions.Context) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(event.Data); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	data, err := os.ReadFile("data.txt")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}
