#!/bin/sh
# sync.sh re-creates third_party/'s copies of ten upstream modules from the
# Go module proxy and applies patches/*.patch to them (GNU patch). Run it (from
# anywhere) after changing a version below (and go.mod's require line with it:
# TestThirdPartyVersions checks they agree); README.md says why the copies
# exist.
#
# sync.sh --pristine DIR copies the same packages into DIR without the
# patches, the "a" side from which a patch is written again.
set -eu
cd "$(dirname "$0")"
out=.
patched=true
if [ "${1:-}" = --pristine ]; then
	[ -n "${2:-}" ] || { echo "usage: sync.sh [--pristine DIR]" >&2; exit 2; }
	mkdir -p "$2"
	out=$(cd "$2" && pwd)
	patched=false
fi

NATS_SERVER=v2.15.3
NATS_CLIENT=v1.56.0
NKEYS=v0.4.17
JWT=v2.8.3
NUID=v1.0.1
COMPRESS=v1.20.4
MCP_SDK=v1.8.0
JSONSCHEMA=v0.4.3
URFAVE_CLI=v2.27.7
ULID=v2.1.2

# copy MODULE VERSION DEST PACKAGE...: the module's go.mod and licences, and
# each listed package's build files (Go and assembly sources, no tests).
copy() {
	mod=$1 ver=$2 dst=$out/$3
	shift 3
	src=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "sync.sh: go mod download $mod@$ver gave no directory" >&2; exit 1; }
	rm -rf "$dst"
	mkdir -p "$dst"
	cp "$src/LICENSE" "$dst/"
	if [ -f "$src/go.mod" ]; then
		cp "$src/go.mod" "$dst/"
	else # a module from before modules: the go command's synthesised go.mod
		printf 'module %s\n' "$mod" >"$dst/go.mod"
	fi
	for pkg in "$@"; do
		mkdir -p "$dst/$pkg"
		for f in "$src/$pkg"/*.go "$src/$pkg"/*.s "$src/$pkg"/LICENSE; do
			case $f in
			*_test.go) ;;
			*) [ ! -f "$f" ] || cp "$f" "$dst/$pkg/" ;;
			esac
		done
	done
	chmod -R u+w "$dst"
}

copy github.com/nats-io/nats-server/v2 "$NATS_SERVER" nats-server \
	conf internal/ldap logger server server/archive server/ats server/avl \
	server/certidp server/certstore server/elastic server/gsl server/pse \
	server/stree server/sysmem server/thw server/tpm
copy github.com/nats-io/nats.go "$NATS_CLIENT" nats.go \
	. encoders/builtin internal/parser internal/syncx jetstream util
copy github.com/nats-io/nkeys "$NKEYS" nkeys .
copy github.com/nats-io/jwt/v2 "$JWT" jwt .
copy github.com/nats-io/nuid "$NUID" nuid .
copy github.com/klauspost/compress "$COMPRESS" compress \
	s2 flate internal/le internal/regmask internal/race
copy github.com/modelcontextprotocol/go-sdk "$MCP_SDK" mcp-go-sdk \
	auth jsonrpc mcp oauthex internal/authutil internal/json \
	internal/jsonrpc2 internal/mcpgodebug internal/util internal/xcontext
copy github.com/google/jsonschema-go "$JSONSCHEMA" jsonschema-go jsonschema
copy github.com/urfave/cli/v2 "$URFAVE_CLI" urfave-cli .
copy github.com/oklog/ulid/v2 "$ULID" ulid .

$patched || exit 0
# --batch and --fuzz=0: a patch that no longer applies exactly (an upstream
# update moved its lines) fails here instead of asking or guessing.
for p in patches/*.patch; do
	[ ! -f "$p" ] || patch --batch --fuzz=0 -s -p1 <"$p"
done
# nats.go's gob encoder goes with its registration (patches/nats.go.patch):
# encoding/gob is then linked by nothing claudemesh builds.
rm nats.go/encoders/builtin/gob_enc.go
