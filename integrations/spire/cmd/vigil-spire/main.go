package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/spire-plugin-sdk/pluginmain"
	agentnav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/agent/nodeattestor/v1"
	servernav1 "github.com/spiffe/spire-plugin-sdk/proto/spire/plugin/server/nodeattestor/v1"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"github.com/urfave/cli/v2"

	"github.com/vigil-attest/vigil/integrations/spire/bridge"
	"github.com/vigil-attest/vigil/integrations/spire/nodeattestor"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// exitUsage is the exit code for bad input, as everywhere in Vigil.
const exitUsage = 2

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args))
}

func run(ctx context.Context, args []string) int {
	app := &cli.App{
		Name:            "vigil-spire",
		Usage:           "Vigil's SPIRE integration: the vigil NodeAttestor plugins and the revocation bridge",
		HideHelpCommand: true,
		Commands:        []*cli.Command{nodeattestorCommand(), bridgeCommand()},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return cli.Exit("vigil-spire: "+err.Error(), exitUsage)
		},
	}
	if err := app.RunContext(ctx, args); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, msg)
			}
			return ec.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "vigil-spire:", err)
		return 1
	}
	return 0
}

func badInput(format string, args ...any) error {
	return cli.Exit("vigil-spire: "+fmt.Sprintf(format, args...), exitUsage)
}

func nodeattestorCommand() *cli.Command {
	return &cli.Command{
		Name:      "nodeattestor",
		Usage:     "serve one side of the vigil NodeAttestor to SPIRE (set as plugin_cmd, with plugin_args = [\"nodeattestor\", \"server\"|\"agent\"])",
		ArgsUsage: "server|agent",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "server":
				p := new(nodeattestor.Server)
				pluginmain.Serve(servernav1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
			case "agent":
				p := new(nodeattestor.Agent)
				pluginmain.Serve(agentnav1.NodeAttestorPluginServer(p), configv1.ConfigServiceServer(p))
			default:
				return badInput("nodeattestor: want server or agent, got %q", c.Args().First())
			}
			return nil
		},
	}
}

func bridgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "bridge",
		Usage: "receive Vigil's signed revocation webhooks and ban (or readmit) the host's SPIRE agent through the SPIRE Server API",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8446", Usage: "`ADDR` to receive webhooks on (HTTPS)"},
			&cli.StringFlag{Name: "tls-dir", Required: true, Usage: "`DIR` with server.crt and server.key (e.g. issued by the Vigil deployment's CA)"},
			&cli.StringFlag{Name: "spire-server-socket", Value: "/tmp/spire-server/private/api.sock", Usage: "spire-server's admin socket `PATH` (its socket_path)"},
			&cli.StringFlag{Name: "trust-domain", Required: true, Usage: "the SPIRE trust `DOMAIN`"},
			&cli.StringSliceFlag{Name: "webhook-secret-file", Required: true, Usage: "`FILE` holding the whsec_ secret the verifier signs with; repeat during rotation"},
			&cli.StringFlag{Name: "data", Required: true, Usage: "`DIR` where the bridge keeps the last event it applied per host, so that a restart does not let a retried older event undo a newer one"},
		},
		Action: func(c *cli.Context) error {
			var keys [][]byte
			for _, f := range c.StringSlice("webhook-secret-file") {
				b, err := os.ReadFile(f)
				if err != nil {
					return badInput("--webhook-secret-file: %v", err)
				}
				k, err := revocation.ParseSecret(string(b))
				if err != nil {
					return badInput("--webhook-secret-file %s: %v", f, err)
				}
				keys = append(keys, k)
			}
			td := c.String("trust-domain")
			if td == "" || strings.ContainsAny(td, "/:") {
				return badInput("--trust-domain %q: want a trust domain name such as example.org", td)
			}
			tc, err := tlsutil.ServerConfig(c.String("tls-dir"))
			if err != nil {
				return badInput("--tls-dir: %v", err)
			}
			api, err := bridge.DialServerAPI(c.String("spire-server-socket"), td)
			if err != nil {
				return badInput("--spire-server-socket: %v", err)
			}
			defer api.Close()
			db, err := store.Open(c.String("data"))
			if err != nil {
				return badInput("--data: %v", err)
			}
			defer db.Close()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			h := &bridge.Handler{Keys: keys, SPIRE: api, Log: log, Applied: bridge.StoreApplied{DB: db}}
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return badInput("--listen: %v", err)
			}
			srv := &http.Server{
				Handler:           http.MaxBytesHandler(h, bridge.MaxBody+1),
				TLSConfig:         tc,
				ReadHeaderTimeout: 5 * time.Second,
				ReadTimeout:       10 * time.Second,
				WriteTimeout:      30 * time.Second,
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			}
			go func() {
				<-c.Context.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			log.Info("bridge listening", "addr", ln.Addr().String(), "spire_server_socket", c.String("spire-server-socket"), "trust_domain", td)
			if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
}
