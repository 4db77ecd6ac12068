package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
)

// serveTLS serves h on addr with cfg until ctx ends, then shuts down
// gracefully. ready, if not nil, receives the bound address once listening
// (useful with port 0).
func serveTLS(ctx context.Context, log *slog.Logger, addr string, cfg *tls.Config, h http.Handler, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := httpapi.NewServer(h, cfg, log)
	log.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) {
		return e
	}
	log.Info("stopped")
	return err
}

// serveMetrics serves h as /metrics over plain HTTP on addr until ctx ends
// or stop is called. Plain, because a Prometheus scraping a private
// interface has no client certificate; the operator picks the interface.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := httpapi.NewServer(mux, nil, log)
	log.Info("serving metrics", "addr", ln.Addr().String())
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return cancel, nil
}

// storeName is a --store URL fit for a log line: without its password.
func storeName(url string) string {
	if url == "" {
		return ""
	}
	u, err := neturl.Parse(url)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
