// Build-only module for the h2spec test peer (see scripts/test-peers.sh).
// The proxy serves h2spec only as v1.5.0 (a 2016 tree) and v2.2.1+incompatible
// (the last tag before upstream added a go.mod without a /v2 suffix, which makes
// v2.3.0+ tags unusable as module versions). v2.2.1 ships no go.mod, so its
// dependencies are pinned here.
module ambient-mesh.local/peers/h2spec

go 1.26.0

tool github.com/summerwind/h2spec/cmd/h2spec

require (
	github.com/fatih/color v1.19.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	github.com/summerwind/h2spec v2.2.1+incompatible // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
