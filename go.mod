module claudemesh

go 1.26.0

require (
	filippo.io/edwards25519 v1.2.0
	github.com/chromedp/cdproto v0.160.1
	github.com/chromedp/chromedp v0.23.1
	github.com/go-json-experiment/json v1.27.2
	github.com/gorilla/websocket v1.5.3
	github.com/mattn/go-isatty v0.0.24
	github.com/modelcontextprotocol/go-sdk v1.8.0
	github.com/nats-io/nats-server/v2 v2.15.3
	github.com/nats-io/nats.go v1.56.0
	github.com/oklog/ulid/v2 v2.1.2
	github.com/urfave/cli/v2 v2.27.7
	go.etcd.io/bbolt v1.4.3
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	golang.org/x/text v0.44.0
	golang.org/x/time v0.16.0
)

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/segmentio/asm v1.1.3 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	golang.org/x/oauth2 v0.35.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
)

// urfave/cli/v2 links a man-page renderer (md2man, blackfriday) whose
// package initialisation every command paid at process start; claudemesh
// renders no man pages (internal/nomd2man says more).
replace github.com/cpuguy83/go-md2man/v2 => ./internal/nomd2man

// Upstream copies with their package-level start-up work made lazy, so that
// every claudemesh process does not pay for the cluster engine's
// initialisers: third_party/README.md says what is patched and why.
replace (
	github.com/google/jsonschema-go => ./third_party/jsonschema-go
	github.com/klauspost/compress => ./third_party/compress
	github.com/modelcontextprotocol/go-sdk => ./third_party/mcp-go-sdk
	github.com/nats-io/jwt/v2 => ./third_party/jwt
	github.com/nats-io/nats-server/v2 => ./third_party/nats-server
	github.com/nats-io/nats.go => ./third_party/nats.go
	github.com/nats-io/nkeys => ./third_party/nkeys
	github.com/nats-io/nuid => ./third_party/nuid
	github.com/oklog/ulid/v2 => ./third_party/ulid
	github.com/urfave/cli/v2 => ./third_party/urfave-cli
)
