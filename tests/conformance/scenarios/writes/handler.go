package kubeless

import (
	"os"
	"strings"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Appends the body to data.txt (a file of its code) and to notes/log.txt (a folder it makes), in its working
// folder (/kubeless, an emptyDir the pod may write to); returns both.
func Handler(event functions.Event, context functions.Context) (string, error) {
	if err := os.MkdirAll("notes", 0o755); err != nil {
		return "", err
	}
	for _, path := range []string{"data.txt", "notes/log.txt"} {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString(event.Data)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	data, err := os.ReadFile("data.txt")
	if err != nil {
		return "", err
	}
	log, err := os.ReadFile("notes/log.txt")
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(string(data), "\n", "") + "|" + string(log), nil
}
