package kubeless

import (
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kubeless/kubeless/pkg/functions"
)

// Handler: the characters of data.txt ("é") read as text: 1 in the pod (Go's strings are UTF-8).
func Handler(event functions.Event, context functions.Context) (string, error) {
	data, err := os.ReadFile("data.txt")
	if err != nil {
		return "", err
	}
	return strconv.Itoa(utf8.RuneCountInString(strings.TrimSpace(string(data)))), nil
}
