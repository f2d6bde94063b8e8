// Local stand-in for github.com/kubeless/kubeless: only pkg/functions, the package user functions
// import. The server's go.mod replaces every version of the real module with this folder.
module github.com/kubeless/kubeless

go 1.13
