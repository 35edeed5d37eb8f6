package remediate

// Error codes of refused runs and requests. They are the domain's words
// for why nothing was triggered; the HTTP layer maps each to a status in
// one table.
const (
	// CodeInvalidRequest: the request is malformed (field errors listed).
	CodeInvalidRequest = "invalid_request"
	// CodeScriptNotAllowed: a script is not on ALLOWED_SCRIPT_POLICY_IDS.
	CodeScriptNotAllowed = "script_not_allowed"
	// CodeScriptChanged: a pinned script was edited after its approval.
	CodeScriptChanged = "script_changed"
	// CodeScriptInvalid: a script does not exist or is not a remediation.
	CodeScriptInvalid = "script_invalid"
	// CodeTargetResolutionFailed: a selector could not be resolved.
	CodeTargetResolutionFailed = "target_resolution_failed"
	// CodeDeviceValidationFailed: listed devices failed validation.
	CodeDeviceValidationFailed = "device_validation_failed"
	// CodeTooManyDevices: the run resolves to more than MAX_DEVICES_PER_RUN.
	CodeTooManyDevices = "too_many_devices"
	// CodeConfirmationRequired: over MAX_FLEET_PERCENT without
	// confirm_device_count.
	CodeConfirmationRequired = "confirmation_required"
	// CodeFleetSizeUnknown: the fleet could not be counted for
	// MAX_FLEET_PERCENT.
	CodeFleetSizeUnknown = "fleet_size_unknown"
	// CodeGraphUnavailable: Graph could not be read (throttled,
	// unavailable) while preparing the run; sending it again may work.
	CodeGraphUnavailable = "graph_unavailable"
	// CodeCallerNotAllowed: the request is outside its caller's rule in
	// CALLER_POLICY (its selectors went past the caller's max_devices,
	// or its scripts or tenant are not the caller's).
	CodeCallerNotAllowed = "caller_not_allowed"
)
