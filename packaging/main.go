// Command package builds Vigil's Debian packages (`make package`): the
// vigil binary cross-compiled for each architecture, its man page, the
// example configurations as conffiles, and the hardened systemd units with
// their maintainer scripts (packaging/deb).
//
// It is a module of its own, so that nfpm and its dependencies (go-git,
// ssh, sprig, …) stay out of the vigil module and the binary.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// Services are the three long-running commands, each with its unit and
// config file.
var Services = []string{"registrar", "verifier", "agent"}

// Options say what to build.
type Options struct {
	Root    string   // the vigil repository
	Out     string   // where the .deb files go
	Version string   // Debian version of the package
	Arches  []string // GOARCH values: amd64, arm64
}

func main() {
	var o Options
	var arches string
	flag.StringVar(&o.Root, "root", "..", "the vigil repository `DIR`")
	flag.StringVar(&o.Out, "out", "../dist", "output `DIR` for the .deb files")
	flag.StringVar(&o.Version, "version", "0.0.0", "package `VERSION` (Debian syntax)")
	flag.StringVar(&arches, "arch", "amd64,arm64", "comma-separated `GOARCH` list")
	flag.Parse()
	o.Arches = strings.Split(arches, ",")
	paths, err := Build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}

// Build writes one .deb per architecture into o.Out and returns their paths.
func Build(o Options) ([]string, error) {
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "vigil-package-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	man := filepath.Join(work, "vigil.1.gz")
	if err := manPage(root, work, man); err != nil {
		return nil, err
	}
	var out []string
	for _, arch := range o.Arches {
		bin := filepath.Join(work, arch, "vigil")
		if err := goBuild(root, arch, bin); err != nil {
			return nil, err
		}
		p, err := writeDeb(o, root, arch, bin, man)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", arch, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// goBuild cross-compiles the vigil binary, statically (CGO_ENABLED=0).
func goBuild(root, arch, out string, tags ...string) error {
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "./cmd/vigil")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build (%s): %v\n%s", arch, err, b)
	}
	return nil
}

// manPage generates vigil(1) from the CLI itself: a host-architecture build
// with the vigil_manpage tag prints it (cmd/vigil/manpage.go); the shipped
// binary has no such command.
func manPage(root, work, out string) error {
	gen := filepath.Join(work, "vigil-manpage")
	if err := goBuild(root, runtime.GOARCH, gen, "vigil_manpage"); err != nil {
		return err
	}
	var page, errb bytes.Buffer
	cmd := exec.Command(gen, "__manpage")
	cmd.Stdout, cmd.Stderr = &page, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("man page: %v\n%s", err, errb.Bytes())
	}
	if !bytes.HasPrefix(page.Bytes(), []byte(".nh\n.TH vigil 1")) {
		return fmt.Errorf("man page: unexpected output %.80q", page.String())
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression) // no name, no mtime: reproducible
	if err != nil {
		return err
	}
	zw.Write(page.Bytes())
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, gz.Bytes(), 0o644)
}

// Contents lists the files of the package for one binary and man page.
func Contents(root, bin, man string) files.Contents {
	deb := filepath.Join(root, "packaging", "deb")
	c := files.Contents{
		{Source: bin, Destination: "/usr/bin/vigil", FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{Source: man, Destination: "/usr/share/man/man1/vigil.1.gz", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
	}
	for _, s := range Services {
		c = append(c,
			&files.Content{
				Source: filepath.Join(root, "docs", "config", s+".yaml"), Destination: "/etc/vigil/" + s + ".yaml",
				Type: files.TypeConfig, FileInfo: &files.ContentFileInfo{Mode: 0o644},
			},
			&files.Content{
				Source: filepath.Join(deb, "vigil-"+s+".service"), Destination: "/usr/lib/systemd/system/vigil-" + s + ".service",
				FileInfo: &files.ContentFileInfo{Mode: 0o644},
			})
	}
	return c
}

func writeDeb(o Options, root, arch, bin, man string) (string, error) {
	deb := filepath.Join(root, "packaging", "deb")
	info := &nfpm.Info{
		Name:          "vigil",
		Arch:          arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "Vigil maintainers <vigil@example.org>",
		Description: "TPM 2.0 remote attestation for Linux fleets\n" +
			"A per-host agent proves with TPM quotes what booted and what has run since;\n" +
			"a registrar enrolls each host's EK/AK pair; a verifier checks every host\n" +
			"against reference policies and revokes its identities when it drifts.",
		Homepage: "https://github.com/vigil-attest/vigil",
		Overridables: nfpm.Overridables{
			Depends:  []string{"adduser"},
			Suggests: []string{"tpm-udev"},
			Contents: Contents(root, bin, man),
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(deb, "postinst"),
				PreRemove:   filepath.Join(deb, "prerm"),
				PostRemove:  filepath.Join(deb, "postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", err
	}
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	name := filepath.Join(o.Out, pkgr.ConventionalFileName(info))
	f, err := os.Create(name)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	return name, f.Close()
}
