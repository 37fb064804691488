package web

import (
	"embed"
	"fmt"
	"html"
	"net/http"
	"path"
)

// The page: one HTML file, one stylesheet, one script and an icon, served
// as they are in the repository (no build step, nothing fetched from
// elsewhere).
//
//go:embed assets/index.html assets/app.css assets/app.js assets/icon.svg
var assets embed.FS

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	serveFile(w, "assets/index.html")
}

func (s *Server) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "index.html" || name != path.Base(name) {
		http.NotFound(w, r)
		return
	}
	serveFile(w, "assets/"+name)
}

func serveFile(w http.ResponseWriter, name string) {
	data, err := assets.ReadFile(name)
	ct, known := contentTypes[path.Ext(name)]
	if err != nil || !known {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Write(data)
}

// PageWeight is the bytes of HTML, CSS and script a page load transfers
// (BENCHMARKS.md).
func PageWeight() (total int, files map[string]int) {
	files = map[string]int{}
	for _, n := range []string{"index.html", "app.css", "app.js", "icon.svg"} {
		data, _ := assets.ReadFile("assets/" + n)
		files[n] = len(data)
		total += len(data)
	}
	return total, files
}

// loggedOut is the page for a browser without a (live) session. It is
// plain HTML: nothing else is served without a session.
func loggedOut(w http.ResponseWriter, status int, why string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark"><title>claudemesh — log in</title></head>
<body><main><h1>claudemesh</h1><p>%s</p>
<p>Run <code>claudemesh ui</code> in a terminal on this machine: it prints a login link that works once, within 60 seconds.</p></main></body></html>
`, html.EscapeString(why))
}
