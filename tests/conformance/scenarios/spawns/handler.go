package kubeless

import (
	"os/exec"
	"syscall"

	"github.com/kubeless/kubeless/pkg/functions"
)

// What a call may leave running: a shell in a session of its own with a child of its own, and a child the call
// waits for, ignoring event.Extensions.Context (a runaway call: the server restarts itself to stop it).
func Handler(event functions.Event, context functions.Context) (string, error) {
	seconds := event.Data
	shell := exec.Command("sh", "-c", "sleep "+seconds+" & wait")
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := shell.Start(); err != nil {
		return "", err
	}
	if err := exec.Command("sleep", seconds).Run(); err != nil {
		return "", err
	}
	return "done", nil
}
