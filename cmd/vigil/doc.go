// Command vigil is Vigil's single binary: the registrar, verifier and agent
// services, the tenant (admin) client, offline tools for event logs, IMA logs,
// quotes and policies, the simulators, the demo and the bench.
//
// This package only wires: it parses flags, builds components from the
// packages that hold the logic, runs them, and maps their results to output
// and exit codes. Exit codes are a contract: 0 ok, 1 verification or policy
// failure, 2 bad input or usage.
package main
