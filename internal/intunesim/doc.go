// Package intunesim is an in-process simulator of the Microsoft Graph beta
// endpoints that remediator calls: managed devices (list, get, the
// initiateOnDemandProactiveRemediation action on managedDevices and
// comanagedDevices), device health scripts and their run states, and JSON
// $batch.
//
// It reproduces the behaviour a client has to cope with against real Intune:
// per-app and per-tenant throttling over a sliding window with or without
// Retry-After, absolute @odata.nextLink paging, the subset of $filter that
// Intune honours together with its quirks (unsupported filters silently
// ignored, ne treated as eq, in (...) answered with 500), Graph and
// Intune-style error bodies, gzip request bodies, and injected faults (5xx,
// malformed bodies, latency, dropped connections before or after a trigger
// took effect, expired tokens). Every request is recorded so tests can assert
// exactly-once behaviour and pacing.
//
// A Server is an http.Handler; Start runs one on loopback.
package intunesim
