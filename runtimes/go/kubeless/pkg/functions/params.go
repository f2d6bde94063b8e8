// Package functions holds the types Kubeless passes to Go functions; identical to
// kubeless/kubeless pkg/functions/params.go so existing functions compile unmodified.
package functions

import (
	"context"
	"net/http"
)

// Extension includes the request and response objects, and the context
type Extension struct {
	Request  *http.Request
	Response http.ResponseWriter
	Context  context.Context
}

// Event includes information about the event source
type Event struct {
	Data           string
	EventID        string
	EventType      string
	EventTime      string
	EventNamespace string
	Extensions     Extension
}

// Context includes information about the function environment
type Context struct {
	FunctionName string
	Timeout      string
	Runtime      string
	MemoryLimit  string
}
