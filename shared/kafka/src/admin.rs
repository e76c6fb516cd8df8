//! The broker administration rust-rdkafka does not wrap, SCRAM users and
//! ACLs, through the C API of the librdkafka it links. Each call submits
//! one request on a queue of its own and waits on a blocking thread for the
//! broker's answer; every object handed to librdkafka is freed by a guard,
//! whichever way the call ends.

use std::ffi::{CStr, CString, c_char};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use crate::connection::{Connection, Login, Mechanism};
use crate::grants::{Grant, Operation, Resource};

/// How long the broker has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// SCRAM's hashing rounds; Kafka refuses fewer than 4096.
const SCRAM_ITERATIONS: i32 = 8192;

/// A client logged in as a principal the broker lets administer it (a
/// super user).
#[derive(Clone)]
pub struct Admin {
    client: Arc<AdminClient<DefaultClientContext>>,
}

impl Admin {
    pub fn connect(connection: &Connection) -> anyhow::Result<Self> {
        let client = connection
            .client_config()
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Self {
            client: Arc::new(client),
        })
    }

    /// Creates each login's SCRAM credential, or replaces it (a password
    /// rotation): connections already open stay logged in, new ones need
    /// the new password.
    pub async fn upsert_users(&self, logins: &[Login]) -> anyhow::Result<()> {
        let logins = logins.to_vec();
        self.blocking(move |client| upsert_users(client, &logins))
            .await
    }

    /// Adds the ALLOW rules; rules that exist already are left as they are.
    /// The broker's authorizer applies them a moment after it answers.
    pub async fn create_acls(&self, grants: &[Grant]) -> anyhow::Result<()> {
        let grants = grants.to_vec();
        self.blocking(move |client| create_acls(client, &grants))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&AdminClient<DefaultClientContext>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let client = Arc::clone(&self.client);
        tokio::task::spawn_blocking(move || call(&client))
            .await
            .context("the admin request's thread")?
    }
}

/// Frees what it holds with `free` when dropped.
struct Owned<T> {
    pointer: *mut T,
    free: unsafe extern "C" fn(*mut T),
}

impl<T> Owned<T> {
    fn new(
        pointer: *mut T,
        free: unsafe extern "C" fn(*mut T),
        what: &str,
    ) -> anyhow::Result<Self> {
        if pointer.is_null() {
            bail!("librdkafka could not allocate {what}");
        }
        Ok(Self { pointer, free })
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `pointer` came from the librdkafka constructor matching
        // `free` and is freed exactly once, here.
        unsafe { (self.free)(self.pointer) }
    }
}

/// Submits one admin request with `submit` and waits for its result event,
/// failing if the request as a whole failed.
fn request(
    client: &AdminClient<DefaultClientContext>,
    operation: rd::rd_kafka_admin_op_t,
    submit: impl FnOnce(
        *mut rd::rd_kafka_t,
        *const rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ),
) -> anyhow::Result<Owned<rd::rd_kafka_event_t>> {
    let kafka = client.inner().native_ptr();
    let timeout_ms = i32::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `kafka` is the live handle `client` owns; options and queue
    // are created for it, freed by their guards after the event is taken.
    unsafe {
        let options = Owned::new(
            rd::rd_kafka_AdminOptions_new(kafka, operation),
            rd::rd_kafka_AdminOptions_destroy,
            "admin options",
        )?;
        let mut reason = [0 as c_char; 256];
        let code = rd::rd_kafka_AdminOptions_set_request_timeout(
            options.pointer,
            timeout_ms,
            reason.as_mut_ptr(),
            reason.len(),
        );
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("setting the request timeout: {}", text(reason.as_ptr()));
        }
        let queue = Owned::new(
            rd::rd_kafka_queue_new(kafka),
            rd::rd_kafka_queue_destroy,
            "a queue",
        )?;
        submit(kafka, options.pointer, queue.pointer);
        // librdkafka answers by the request timeout at the latest.
        let event = rd::rd_kafka_queue_poll(queue.pointer, timeout_ms.saturating_add(5_000));
        let event = Owned::new(event, rd::rd_kafka_event_destroy, "an event")
            .map_err(|_| anyhow!("no answer from the broker within {REQUEST_TIMEOUT:?}"))?;
        if rd::rd_kafka_event_error(event.pointer)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            bail!("{}", text(rd::rd_kafka_event_error_string(event.pointer)));
        }
        Ok(event)
    }
}

fn upsert_users(
    client: &AdminClient<DefaultClientContext>,
    logins: &[Login],
) -> anyhow::Result<()> {
    let mut alterations = Array::new(rd::rd_kafka_UserScramCredentialAlteration_destroy_array);
    for login in logins {
        let username = c_string(&login.username)?;
        let password = login.password.expose().as_bytes();
        let mechanism = match login.mechanism {
            Mechanism::ScramSha512 => {
                rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512
            }
            Mechanism::ScramSha256 => {
                rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256
            }
        };
        // SAFETY: the strings outlive the call, which copies them; no salt
        // given, so librdkafka draws a random one.
        let alteration = unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                username.as_ptr(),
                mechanism,
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                std::ptr::null(),
                0,
            )
        };
        if alteration.is_null() {
            bail!("librdkafka refused the credential of {}", login.username);
        }
        alterations.items.push(alteration);
    }
    let event = request(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
        |kafka, options, queue| {
            // SAFETY: the array holds live alterations; librdkafka copies
            // them before returning.
            unsafe {
                rd::rd_kafka_AlterUserScramCredentials(
                    kafka,
                    alterations.items.as_mut_ptr(),
                    alterations.items.len(),
                    options,
                    queue,
                )
            }
        },
    )
    .context("creating the SCRAM users")?;
    let mut failures = Vec::new();
    // SAFETY: the event is the result of this request and outlives the
    // responses read from it.
    unsafe {
        let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event.pointer);
        if result.is_null() {
            bail!("the broker's answer was not a credentials result");
        }
        let mut count = 0;
        let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
        if count != logins.len() {
            bail!(
                "the broker answered for {count} of {} credentials",
                logins.len()
            );
        }
        for index in 0..count {
            let response = *responses.add(index);
            let user = text(rd::rd_kafka_AlterUserScramCredentials_result_response_user(
                response,
            ));
            if let Some(error) =
                error_text(rd::rd_kafka_AlterUserScramCredentials_result_response_error(response))
            {
                failures.push(format!("{user}: {error}"));
            }
        }
    }
    none_refused("SCRAM credentials", failures)
}

fn create_acls(client: &AdminClient<DefaultClientContext>, grants: &[Grant]) -> anyhow::Result<()> {
    let mut bindings = Array::new(rd::rd_kafka_AclBinding_destroy_array);
    for grant in grants {
        let name = c_string(&grant.name)?;
        let principal = c_string(&grant.principal)?;
        let resource = match grant.resource {
            Resource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            Resource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        };
        let operation = match grant.operation {
            Operation::Read => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
        };
        let mut reason = [0 as c_char; 256];
        // SAFETY: the strings outlive the call, which copies them.
        let binding = unsafe {
            rd::rd_kafka_AclBinding_new(
                resource,
                name.as_ptr(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
                principal.as_ptr(),
                c"*".as_ptr(),
                operation,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                reason.as_mut_ptr(),
                reason.len(),
            )
        };
        if binding.is_null() {
            // SAFETY: librdkafka wrote a NUL-terminated reason.
            bail!("librdkafka refused {grant:?}: {}", unsafe {
                text(reason.as_ptr())
            });
        }
        bindings.items.push(binding);
    }
    let event = request(
        client,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        |kafka, options, queue| {
            // SAFETY: the array holds live bindings; librdkafka copies them
            // before returning.
            unsafe {
                rd::rd_kafka_CreateAcls(
                    kafka,
                    bindings.items.as_mut_ptr(),
                    bindings.items.len(),
                    options,
                    queue,
                )
            }
        },
    )
    .context("creating the ACLs")?;
    let mut failures = Vec::new();
    // SAFETY: the event is the result of this request and outlives the
    // results read from it; they come in the order of the request.
    unsafe {
        let result = rd::rd_kafka_event_CreateAcls_result(event.pointer);
        if result.is_null() {
            bail!("the broker's answer was not an ACL result");
        }
        let mut count = 0;
        let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
        if count != grants.len() {
            bail!("the broker answered for {count} of {} ACLs", grants.len());
        }
        for (index, grant) in grants.iter().enumerate().take(count) {
            if let Some(error) = error_text(rd::rd_kafka_acl_result_error(*results.add(index))) {
                failures.push(format!("{grant:?}: {error}"));
            }
        }
    }
    none_refused("ACLs", failures)
}

/// librdkafka objects, freed together with `free` when dropped.
struct Array<T> {
    items: Vec<*mut T>,
    free: unsafe extern "C" fn(*mut *mut T, usize),
}

impl<T> Array<T> {
    fn new(free: unsafe extern "C" fn(*mut *mut T, usize)) -> Self {
        Self {
            items: Vec::new(),
            free,
        }
    }
}

impl<T> Drop for Array<T> {
    fn drop(&mut self) {
        // SAFETY: every item came from the constructor matching `free`, and
        // none is freed anywhere else.
        unsafe { (self.free)(self.items.as_mut_ptr(), self.items.len()) }
    }
}

/// Fails with every item the broker refused, if it refused any.
fn none_refused(what: &str, failures: Vec<String>) -> anyhow::Result<()> {
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("the broker refused {what}: {}", failures.join("; "))
    }
}

fn c_string(value: &str) -> anyhow::Result<CString> {
    CString::new(value).with_context(|| format!("{value:?} holds a NUL byte"))
}

/// The text of a NUL-terminated C string; empty for a null pointer.
///
/// # Safety
/// `pointer` is null or points to a NUL-terminated string.
unsafe fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(pointer) }
        .to_string_lossy()
        .into_owned()
}

/// The message of a per-item error, or `None` when there is none.
///
/// # Safety
/// `error` is null or a live `rd_kafka_error_t`.
unsafe fn error_text(error: *const rd::rd_kafka_error_t) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    unsafe {
        let code = rd::rd_kafka_error_code(error);
        (code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| format!("{} ({code:?})", text(rd::rd_kafka_error_string(error))))
    }
}
