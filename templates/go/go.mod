module kubeless

go 1.21

// Provided by the runtime (kubeless-local and the Kubeless Go image); add your own requirements
// below: they are fetched through GOPROXY when the function is built.
require github.com/kubeless/kubeless v1.0.7
