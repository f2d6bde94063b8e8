package kubeless

import (
	"os"
	"strings"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// `sleep`: a runaway call (30 s, ignoring the context); otherwise data.txt beside the handler, read
// by a relative path.
func Handler(event functions.Event, context functions.Context) (string, error) {
	if event.Data == "sleep" {
		time.Sleep(30 * time.Second)
		return "woke up", nil
	}
	data, err := os.ReadFile("data.txt")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}
