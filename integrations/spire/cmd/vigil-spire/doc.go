// Command vigil-spire is Vigil's SPIRE integration in one binary:
//
//	vigil-spire nodeattestor server   the server side of the vigil NodeAttestor (run by spire-server)
//	vigil-spire nodeattestor agent    its agent side (run by spire-agent)
//	vigil-spire bridge                Vigil revocation webhooks → SPIRE bans
//
// SPIRE starts the plugins itself, with plugin_cmd naming this binary and
// plugin_args naming the side. It is built from a module of its own so
// that SPIRE's dependencies stay out of the vigil binary.
package main
