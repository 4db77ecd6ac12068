// Package flock locks files between processes (flock(2)), for the
// simulated hosts and soft TPMs that many processes of a bench share.
package flock
