package kubeless

import (
	"strconv"
	"sync"
	"time"

	"github.com/kubeless/kubeless/pkg/functions"
)

// What earlier calls allocated stays allocated (package state, calls run concurrently: a lock).
var (
	lock sync.Mutex
	held [][]byte
)

// Handler allocates (and touches) as many MiB more as the body says; answers how many are held, two seconds later.
func Handler(event functions.Event, context functions.Context) (string, error) {
	mib, err := strconv.Atoi(event.Data)
	if err != nil {
		return "", err
	}
	lock.Lock()
	for i := 0; i < mib; i++ {
		chunk := make([]byte, 1<<20)
		for j := range chunk {
			chunk[j] = 'x'
		}
		held = append(held, chunk)
	}
	count := len(held)
	lock.Unlock()
	time.Sleep(2 * time.Second)
	return strconv.Itoa(count), nil
}
