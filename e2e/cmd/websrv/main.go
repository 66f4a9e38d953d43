// Command websrv is the web server of cri-mini's offline critest images: it
// stands in for nginx and httpd. It answers every GET with 200 and a short
// page, and is configured through the environment the image sets:
//
//	WEBSRV_PORT     TCP port (default 80)
//	WEBSRV_NAME     name used in the log line (default "websrv")
//	WEBSRV_PIDFILE  file to write the process ID to (optional)
//	WEBSRV_TITLE    argv[0] to run under (optional), e.g. nginx's
//	                "nginx: master process nginx -g daemon off;"
//
// With a title it re-executes its own file under that argv[0], so that
// /proc/PID/cmdline shows the title while the kernel's comm stays the file's
// name (pidof nginx finds it).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "websrv: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	if title := os.Getenv("WEBSRV_TITLE"); title != "" && os.Args[0] != title {
		// Resolve through PATH rather than /proc/self/exe: comm is taken
		// from the executed file's name, and that must stay "nginx".
		self, err := exec.LookPath(os.Args[0])
		if err != nil {
			return fmt.Errorf("find own executable %q: %w", os.Args[0], err)
		}
		return syscall.Exec(self, []string{title}, os.Environ())
	}

	name := envOr("WEBSRV_NAME", "websrv")
	port := envOr("WEBSRV_PORT", "80")
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	if pidFile := os.Getenv("WEBSRV_PIDFILE"); pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("pid file: %w", err)
		}
	}
	fmt.Printf("%s: listening on :%s\n", name, port)

	// As PID 1 of a container a signal without a handler is ignored, so
	// stopping the container would wait for its timeout.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	go func() {
		s := <-stop
		fmt.Printf("%s: %v, exiting\n", name, s)
		os.Exit(0)
	}()

	page := fmt.Sprintf("<html><body><h1>Welcome to %s!</h1></body></html>\n", name)
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	}))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
