// The engine is a Node.js addon: node provides its napi functions when it loads the addon. The
// fuzz binary never calls them (only the transform module runs), but its start-up still binds
// every symbol the engine refers to: each napi function is bound here to a stub that aborts.
// If the engine comes to use another one, the fuzz binary stops at start with "undefined
// symbol: napi_…": add that name below.
const NAPI_FUNCTIONS: &[&str] = &[
    "napi_add_env_cleanup_hook", "napi_call_function", "napi_call_threadsafe_function", "napi_coerce_to_string", "napi_create_array_with_length",
    "napi_create_bigint_words", "napi_create_double", "napi_create_error", "napi_create_function", "napi_create_int64", "napi_create_object",
    "napi_create_promise", "napi_create_reference", "napi_create_string_latin1", "napi_create_string_utf8", "napi_create_threadsafe_function",
    "napi_create_uint32", "napi_define_properties", "napi_delete_reference", "napi_fatal_exception", "napi_get_and_clear_last_exception",
    "napi_get_array_length", "napi_get_boolean", "napi_get_cb_info", "napi_get_element", "napi_get_global", "napi_get_named_property",
    "napi_get_null", "napi_get_property", "napi_get_property_names", "napi_get_prototype", "napi_get_reference_value", "napi_get_undefined",
    "napi_get_value_bigint_words", "napi_get_value_bool", "napi_get_value_double", "napi_get_value_int64", "napi_get_value_string_utf8", "napi_get_value_uint32",
    "napi_has_own_property", "napi_is_array", "napi_is_error", "napi_is_exception_pending", "napi_is_promise", "napi_reference_unref",
    "napi_reject_deferred", "napi_release_threadsafe_function", "napi_remove_env_cleanup_hook", "napi_resolve_deferred", "napi_set_element",
    "napi_set_named_property", "napi_set_property", "napi_throw", "napi_typeof", "napi_unref_threadsafe_function", "napi_unwrap", "napi_wrap",
];

fn main() {
    for name in NAPI_FUNCTIONS {
        println!("cargo:rustc-link-arg-bins=-Wl,--defsym={name}=fuzz_napi_unavailable");
    }
}
