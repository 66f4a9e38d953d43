// Package supervisorv1 is version 1 of the protocol between the cri-mini
// daemon and its container supervisors, generated from supervisor.proto
// (make proto): the create handshake, the control socket and the records
// a supervisor leaves in the state directory.
package supervisorv1
