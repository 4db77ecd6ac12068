package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/verifier"
)

//go:embed assets
var assets embed.FS

// Verifier is what the dashboard reads from a verifier's admin API.
type Verifier interface {
	List(ctx context.Context) ([]verifier.AgentView, error)
	Status(ctx context.Context, id string) (verifier.AgentView, error)
	History(ctx context.Context, id string, since time.Time, limit int) (verifier.HistoryView, error)
	ListPolicies(ctx context.Context) ([]verifier.Policy, error)
}

// Options configure a dashboard.
type Options struct {
	// Verifiers are the replicas of one deployment, asked in turn.
	Verifiers []Verifier
	// Refresh is how often pages re-fetch their content (default 2 s).
	Refresh time.Duration
	// FailedShown bounds the failed hosts whose revocations the fleet page
	// reads (default 50): the newest failures first.
	FailedShown int
	Log         *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Server serves the dashboard.
type Server struct {
	opts  Options
	pages *template.Template
	mux   *http.ServeMux
}

// New makes a dashboard server.
func New(opts Options) (*Server, error) {
	if len(opts.Verifiers) == 0 {
		return nil, errors.New("dashboard: no verifier")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.FailedShown <= 0 {
		opts.FailedShown = 50
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pages, err := template.New("").Funcs(template.FuncMap{
		"ago":   func(t time.Time) string { return ago(opts.Now(), t) },
		"stamp": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"lower": strings.ToLower,
	}).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	s := &Server{opts: opts, pages: pages, mux: http.NewServeMux()}
	static, _ := fs.Sub(assets, "assets")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /{$}", s.fleet)
	s.mux.HandleFunc("GET /agents/{id}", s.host)
	s.mux.HandleFunc("GET /policies", s.policies)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	return s, nil
}

// ServeHTTP implements http.Handler: read-only, framed by nobody, scripts
// from itself only.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// page is what every page template gets.
type page struct {
	Title   string
	Refresh int64 // milliseconds
	Partial bool  // only the content, for the live refresh
	Error   string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name, title string, data any, err error) {
	p := page{Title: title, Refresh: s.opts.Refresh.Milliseconds(), Partial: r.URL.Query().Get("partial") == "1", Data: data}
	code := http.StatusOK
	if err != nil {
		p.Error = err.Error()
		code = http.StatusBadGateway
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Kind == apierr.NotFound {
			code = http.StatusNotFound
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages.ExecuteTemplate(w, name, p); err != nil {
		s.opts.Log.Error("dashboard: rendering", "page", name, "err", err)
	}
}

// ask runs fn against each verifier in turn until one answers (an
// answer includes "not found").
func ask[T any](ctx context.Context, s *Server, fn func(Verifier) (T, error)) (T, error) {
	var zero T
	var err error
	for _, v := range s.opts.Verifiers {
		var out T
		if out, err = fn(v); err == nil {
			return out, nil
		}
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Kind != apierr.Unavailable && ae.Kind != apierr.Internal {
			return zero, err
		}
	}
	return zero, fmt.Errorf("no verifier answered: %w", err)
}

// Fleet is the fleet page's data.
type Fleet struct {
	Total, Attesting, Pending, Failed int
	// Hosts are every host: failed first (newest failure first), then
	// pending, then attesting, each by ID.
	Hosts []Host
	// Revocations are the revocation events raised for the failed hosts
	// shown, newest first.
	Revocations []Revocation
}

// Host is one row of the fleet table.
type Host struct {
	verifier.AgentView
	// Failing is the failing IMA file, when an IMA check failed.
	Failing string
}

// Revocation is one revocation event and its delivery.
type Revocation struct {
	AgentID    string
	At         time.Time
	Type       string
	ID         string
	Deliveries []Delivery
}

// Delivery is an event's delivery to one webhook.
type Delivery struct {
	Sink      string
	Delivered bool
	At        time.Time
	Attempts  int
	LastError string
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request) {
	f, err := s.loadFleet(r.Context())
	s.render(w, r, "fleet.html", "Fleet", f, err)
}

func (s *Server) loadFleet(ctx context.Context) (Fleet, error) {
	var f Fleet
	agents, err := ask(ctx, s, func(v Verifier) ([]verifier.AgentView, error) { return v.List(ctx) })
	if err != nil {
		return f, err
	}
	rank := map[verifier.State]int{verifier.StateFailed: 0, verifier.StatePending: 1, verifier.StateAttesting: 2}
	slices.SortFunc(agents, func(a, b verifier.AgentView) int {
		if d := rank[a.State] - rank[b.State]; d != 0 {
			return d
		}
		if a.State == verifier.StateFailed && !a.FailedAt.Equal(b.FailedAt) {
			return b.FailedAt.Compare(a.FailedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	f.Total = len(agents)
	shown := 0
	for _, a := range agents {
		switch a.State {
		case verifier.StateAttesting:
			f.Attesting++
		case verifier.StatePending:
			f.Pending++
		case verifier.StateFailed:
			f.Failed++
		}
		h := Host{AgentView: a}
		if a.State == verifier.StateFailed && shown < s.opts.FailedShown {
			shown++
			hist, err := ask(ctx, s, func(v Verifier) (verifier.HistoryView, error) { return v.History(ctx, a.ID, a.FailedAt, 20) })
			if err == nil {
				for _, e := range hist.Entries {
					if e.Kind == verifier.HistoryFailure && e.IMA != nil {
						h.Failing = e.IMA.Path
					}
					if e.Kind == verifier.HistoryRevocation && e.Event != nil {
						f.Revocations = append(f.Revocations, revocationOf(a.ID, e))
					}
				}
			}
		}
		f.Hosts = append(f.Hosts, h)
	}
	slices.SortFunc(f.Revocations, func(a, b Revocation) int { return b.At.Compare(a.At) })
	return f, nil
}

func revocationOf(id string, e verifier.HistoryEntry) Revocation {
	r := Revocation{AgentID: id, At: e.At, Type: e.Event.Type, ID: e.Event.ID}
	for _, sink := range slices.Sorted(maps.Keys(e.Deliveries)) {
		d := e.Deliveries[sink]
		r.Deliveries = append(r.Deliveries, Delivery{Sink: sink, Delivered: d.Delivered, At: d.DeliveredAt, Attempts: d.Attempts, LastError: d.LastError})
	}
	return r
}

// HostPage is a host page's data.
type HostPage struct {
	Agent verifier.AgentView
	// Failure is the failure the host is failed for, from its history.
	Failure *verifier.HistoryEntry
	// Timeline is the host's history, newest first.
	Timeline []verifier.HistoryEntry
}

func (s *Server) host(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	var p HostPage
	a, err := ask(ctx, s, func(v Verifier) (verifier.AgentView, error) { return v.Status(ctx, id) })
	if err == nil {
		p.Agent = a
		var hist verifier.HistoryView
		hist, err = ask(ctx, s, func(v Verifier) (verifier.HistoryView, error) { return v.History(ctx, id, time.Time{}, 200) })
		p.Timeline = hist.Entries
		slices.Reverse(p.Timeline)
		if a.State == verifier.StateFailed {
			for i := range p.Timeline {
				if p.Timeline[i].Kind == verifier.HistoryFailure {
					p.Failure = &p.Timeline[i]
					break
				}
			}
		}
	}
	s.render(w, r, "host.html", "Host "+id, p, err)
}

func (s *Server) policies(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ps, err := ask(ctx, s, func(v Verifier) ([]verifier.Policy, error) { return v.ListPolicies(ctx) })
	slices.SortFunc(ps, func(a, b verifier.Policy) int { return strings.Compare(a.Name, b.Name) })
	s.render(w, r, "policies.html", "Policies", ps, err)
}

// ago says how long before now t was, coarsely.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
