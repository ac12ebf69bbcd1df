//go:build tools

// Package tools pins the main packages `make pulumi` builds, so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
