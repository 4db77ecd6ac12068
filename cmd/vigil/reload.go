package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/verifier/revocation"
)

// reloadable is one part of a service's configuration that SIGHUP reads
// again. reload puts the new configuration in force and returns what
// changed as log attributes (none: nothing did), or an error naming the
// file and leaves the old configuration in force.
type reloadable struct {
	what   string
	reload func() ([]any, error)
}

// reloadOnSIGHUP reloads every part on each SIGHUP until ctx ends. Each
// part is reloaded on its own, all or nothing: a part that fails to load
// keeps its old configuration and logs one line saying what and where; one
// that loads logs what changed. Connections, registrations and attestation
// state are untouched. The handler is installed before reloadOnSIGHUP
// returns, so a SIGHUP sent once the service listens never kills it.
func reloadOnSIGHUP(ctx context.Context, log *slog.Logger, parts []reloadable) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reloadAll(log, parts)
			}
		}
	}()
}

func reloadAll(log *slog.Logger, parts []reloadable) {
	for _, p := range parts {
		changes, err := p.reload()
		switch {
		case err != nil:
			log.Error("reload failed; keeping the old configuration", "what", p.what, "err", err.Error())
		case len(changes) == 0:
			log.Info("reloaded, unchanged", "what", p.what)
		default:
			log.Info("reloaded", append([]any{"what", p.what}, changes...)...)
		}
	}
}

// reloadKeyPair reloads a certificate and key of the TLS directory.
func reloadKeyPair(what string, kp *tlsutil.KeyPair) reloadable {
	return reloadable{what: what, reload: func() ([]any, error) {
		before, after, err := kp.Reload()
		if err != nil {
			return nil, err
		}
		if before != nil && before.Equal(after) {
			return nil, nil
		}
		return []any{"file", kp.CertFile, "old_serial", tlsutil.SerialHex(before), "new_serial", tlsutil.SerialHex(after),
			"not_after", after.NotAfter}, nil
	}}
}

// reloadAdminCRL reloads the admin CRL of the TLS directory (admin.crl):
// certificates revoked since are refused on new connections.
func reloadAdminCRL(crl *tlsutil.AdminCRL) reloadable {
	return reloadable{what: "admin crl", reload: func() ([]any, error) {
		before, after, err := crl.Reload()
		if err != nil {
			return nil, err
		}
		if after == nil || (before != nil && bytes.Equal(before.Raw, after.Raw)) {
			return nil, nil
		}
		old := map[string]bool{}
		for _, s := range tlsutil.RevokedSerials(before) {
			old[s] = true
		}
		var added []string
		for _, s := range tlsutil.RevokedSerials(after) {
			if !old[s] {
				added = append(added, s)
			}
		}
		attrs := []any{"file", crl.File, "crl_number", after.Number.String(), "revoked", len(after.RevokedCertificateEntries)}
		if len(added) > 0 {
			attrs = append(attrs, "newly_revoked", added)
		}
		return attrs, nil
	}}
}

// ekSources is what an EK policy was loaded from, kept to tell what a
// reload changed.
type ekSources struct {
	roots, intermediates []*x509.Certificate
	allow                map[string]bool
}

// loadEKPolicy reads --ek-roots and --ek-allow (either may be empty) and
// builds the policy of mode, or of the default mode for the files given.
func loadEKPolicy(mode, rootsDir, allowFile string) (registrar.EKPolicy, ekSources, error) {
	var p registrar.EKPolicy
	var src ekSources
	if rootsDir != "" {
		roots, inter, err := registrar.LoadEKCerts(rootsDir)
		if err != nil {
			return p, src, err
		}
		src.roots, src.intermediates = roots, inter
		p.Roots, p.Intermediates = x509.NewCertPool(), x509.NewCertPool()
		for _, c := range roots {
			p.Roots.AddCert(c)
		}
		for _, c := range inter {
			p.Intermediates.AddCert(c)
		}
	}
	if allowFile != "" {
		allow, err := registrar.LoadEKAllowlist(allowFile)
		if err != nil {
			return p, src, err
		}
		p.Allow, src.allow = allow, allow
	}
	p.Mode = mode
	if p.Mode == "" {
		switch {
		case p.Roots != nil && p.Allow != nil:
			p.Mode = registrar.EKPolicyChainOrAllowlist
		case p.Allow != nil:
			p.Mode = registrar.EKPolicyAllowlist
		default:
			p.Mode = registrar.EKPolicyChain
		}
	}
	return p, src, p.Validate()
}

// changes lists, as log attributes, the roots, intermediates and allowlist
// entries added and removed from old to new.
func (old ekSources) changes(new ekSources) []any {
	var attrs []any
	diff := func(name string, a, b []*x509.Certificate) {
		added, removed := certNames(b, a), certNames(a, b)
		if len(added) > 0 {
			attrs = append(attrs, name+"_added", added)
		}
		if len(removed) > 0 {
			attrs = append(attrs, name+"_removed", removed)
		}
	}
	diff("roots", old.roots, new.roots)
	diff("intermediates", old.intermediates, new.intermediates)
	added, removed := 0, 0
	for h := range new.allow {
		if !old.allow[h] {
			added++
		}
	}
	for h := range old.allow {
		if !new.allow[h] {
			removed++
		}
	}
	if added > 0 || removed > 0 {
		attrs = append(attrs, "allowlist_added", added, "allowlist_removed", removed, "allowlist_entries", len(new.allow))
	}
	if len(attrs) > 0 {
		attrs = append(attrs, "roots", len(new.roots), "intermediates", len(new.intermediates))
	}
	return attrs
}

// certNames are the subject CNs of the certificates of a not in b.
func certNames(a, b []*x509.Certificate) []string {
	in := make(map[[32]byte]bool, len(b))
	for _, c := range b {
		in[sha256.Sum256(c.Raw)] = true
	}
	var names []string
	for _, c := range a {
		if !in[sha256.Sum256(c.Raw)] {
			names = append(names, c.Subject.CommonName)
		}
	}
	slices.Sort(names)
	return names
}

// webhookSecrets reloads the keys of the webhook sinks from their secret
// files, all of them or none.
func webhookSecrets(sinks []*revocation.Webhook, files []string) reloadable {
	return reloadable{what: "webhook secrets", reload: func() ([]any, error) {
		keys := make([][]byte, len(files))
		for i, f := range files {
			key, err := readWebhookSecret(f)
			if err != nil {
				return nil, err
			}
			keys[i] = key
		}
		var rotated []string
		for i, w := range sinks {
			if !slices.Equal(w.CurrentKey(), keys[i]) {
				w.SetKey(keys[i])
				rotated = append(rotated, files[i])
			}
		}
		if len(rotated) == 0 {
			return nil, nil
		}
		return []any{"rotated", rotated}, nil
	}}
}
