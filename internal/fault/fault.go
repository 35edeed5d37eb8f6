// Package fault is remediator's one error vocabulary: the codes every
// layer refuses with (Code) and the one error type that carries them
// (Error). The HTTP layer maps each code to a status in one table
// (internal/httpapi's codes), which a test holds to All; no other package
// spells a code as a string.
package fault

import (
	"fmt"
	"time"
)

// Code names why a request or run was refused, or how it ended.
type Code string

// The codes, by the layer that answers with them.
const (
	// InvalidRequest: the request is malformed (Details names each field).
	InvalidRequest Code = "invalid_request"
	// ScriptNotAllowed: a script is not on ALLOWED_SCRIPT_POLICY_IDS.
	ScriptNotAllowed Code = "script_not_allowed"
	// ScriptChanged: a pinned script was edited after its approval.
	ScriptChanged Code = "script_changed"
	// ScriptInvalid: a script does not exist or is not a remediation.
	ScriptInvalid Code = "script_invalid"
	// TargetResolutionFailed: a selector could not be resolved.
	TargetResolutionFailed Code = "target_resolution_failed"
	// DeviceValidationFailed: listed devices failed validation.
	DeviceValidationFailed Code = "device_validation_failed"
	// TooManyDevices: the run resolves to more than MAX_DEVICES_PER_RUN.
	TooManyDevices Code = "too_many_devices"
	// ConfirmationRequired: over MAX_FLEET_PERCENT without
	// confirm_device_count.
	ConfirmationRequired Code = "confirmation_required"
	// FleetSizeUnknown: the fleet could not be counted for
	// MAX_FLEET_PERCENT.
	FleetSizeUnknown Code = "fleet_size_unknown"
	// GraphUnavailable: Graph could not be read (throttled, unavailable)
	// while preparing the run; sending it again may work.
	GraphUnavailable Code = "graph_unavailable"
	// CallerNotAllowed: the request is outside its caller's rule in
	// CALLER_POLICY (selectors past its max_devices, scripts or tenant not
	// its own).
	CallerNotAllowed Code = "caller_not_allowed"

	// UnknownTenant: no credential for the request's tenant.
	UnknownTenant Code = "unknown_tenant"
	// TokenUnavailable: no Graph token could be had.
	TokenUnavailable Code = "token_unavailable"
	// KeyVaultUnavailable: Key Vault could not be read.
	KeyVaultUnavailable Code = "key_vault_unavailable"
	// BadCredential: the secret in Key Vault is not a usable credential.
	BadCredential Code = "bad_credential"
	// CredentialUnavailable: the credential source failed in a way of its
	// own.
	CredentialUnavailable Code = "credential_unavailable"

	// AlertNotActionable: an alert names no device or no script.
	AlertNotActionable Code = "alert_not_actionable"

	// StorageUnavailable: run storage could not be reached.
	StorageUnavailable Code = "storage_unavailable"
	// NotFound: no such run or route, or no run storage.
	NotFound Code = "not_found"
	// AnswerTooLarge: a synchronous answer could not account for every
	// device within MAX_ANSWER_BYTES.
	AnswerTooLarge Code = "answer_too_large"
	// Internal: a fault of remediator's own.
	Internal Code = "internal"

	// DevicesFailed: the run ran, and a device failed or was not
	// attempted (the answer is its summary).
	DevicesFailed Code = "devices_failed"
	// InvalidInvocation: the Functions host's payload could not be read.
	InvalidInvocation Code = "invalid_invocation"
	// RequestTooLarge: the body is over the size allowed.
	RequestTooLarge Code = "request_too_large"
	// MethodNotAllowed: wrong method for the route.
	MethodNotAllowed Code = "method_not_allowed"
	// IdempotencyKeyReused: an Idempotency-Key sent with another body.
	IdempotencyKeyReused Code = "idempotency_key_reused"
	// InProgress: a request with this Idempotency-Key is being answered.
	InProgress Code = "in_progress"
	// UnsupportedMediaType: local serve, a body not sent as JSON.
	UnsupportedMediaType Code = "unsupported_media_type"
	// NotLocal: local serve, a request not from this machine.
	NotLocal Code = "not_local"
	// TooManyRequests: the caller is over CALLER_RATE.
	TooManyRequests Code = "too_many_requests"
	// FormRejected: a POST from a web page that is not one of this
	// deployment's own, or a form without the page's token.
	FormRejected Code = "form_rejected"
)

// All is every code, for the status table's test.
func All() []Code {
	return []Code{InvalidRequest, ScriptNotAllowed, ScriptChanged, ScriptInvalid, TargetResolutionFailed,
		DeviceValidationFailed, TooManyDevices, ConfirmationRequired, FleetSizeUnknown, GraphUnavailable,
		CallerNotAllowed, UnknownTenant, TokenUnavailable, KeyVaultUnavailable, BadCredential,
		CredentialUnavailable, AlertNotActionable, StorageUnavailable, NotFound, AnswerTooLarge, Internal,
		DevicesFailed, InvalidInvocation, RequestTooLarge, MethodNotAllowed, IdempotencyKeyReused, InProgress,
		UnsupportedMediaType, NotLocal, TooManyRequests, FormRejected}
}

// FieldError is one problem with a request, at a JSON path such as
// managed_devices[3].device_id.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a refusal: nothing was triggered. Code says why, Details name
// the fields at fault (Total counts them, listed or not), RetryAfter says
// when sending again may work, and Summary is the refused run's account of
// its devices (a *remediate.Summary), if it got that far.
type Error struct {
	Code       Code
	Message    string
	Details    []FieldError
	Total      int
	RetryAfter time.Duration
	Summary    any
}

// Error is the code and message.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New is an Error of code with a message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid is an invalid_request naming field.
func Invalid(field, msg string) *Error {
	return &Error{Code: InvalidRequest, Message: field + ": " + msg, Details: []FieldError{{Field: field, Message: msg}}, Total: 1}
}
