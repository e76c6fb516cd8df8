use std::process::Command;

use super::*;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "shipshape";

fn config(algorithm: Algorithm, key: VerificationKey) -> VerifierConfig {
    VerifierConfig {
        algorithm,
        key,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(30),
        max_lifetime: DEFAULT_MAX_LIFETIME,
    }
}

fn hs256() -> Verifier {
    Verifier::new(&config(
        Algorithm::Hs256,
        VerificationKey::Secret(SECRET.into()),
    ))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with exactly these claims, signed with `key` by `algorithm`.
fn signed(claims: &Claims, algorithm: jsonwebtoken::Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn claims(exp: u64) -> Claims {
    Claims {
        sub: "alice".into(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        exp,
        iat: now(),
        scope: String::new(),
    }
}

/// A token with `claims` written as JSON, so they may be of any type,
/// under `header`, signed with the tests' secret.
fn signed_json(header: &Header, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// Valid claims with this `exp`, as JSON, and no `iat`.
fn json_claims(exp: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": exp})
}

fn hs256_header() -> Header {
    Header::new(jsonwebtoken::Algorithm::HS256)
}

#[test]
fn a_minted_token_names_its_subject_and_scopes() {
    let minter = Minter::hs256(SECRET, ISSUER, AUDIENCE).unwrap();
    let token = minter
        .mint("alice", &["admin", "orders"], Duration::from_secs(60))
        .unwrap();
    let identity = hs256().verify(&token).unwrap();
    assert_eq!(identity.subject(), "alice");
    assert!(identity.has_scope(ADMIN_SCOPE));
    assert!(identity.has_scope("orders"));

    let customer = minter.mint("bob", &[], Duration::from_secs(60)).unwrap();
    assert!(!hs256().verify(&customer).unwrap().has_scope(ADMIN_SCOPE));
}

#[test]
fn expiry_is_checked_with_the_leeway() {
    let key = EncodingKey::from_secret(SECRET);
    let hs = jsonwebtoken::Algorithm::HS256;
    let recent = signed(&claims(now() - 10), hs, &key);
    assert!(
        hs256().verify(&recent).is_ok(),
        "10 s late is within 30 s of skew"
    );
    let expired = signed(&claims(now() - 120), hs, &key);
    assert_eq!(hs256().verify(&expired), Err(TokenError::Expired));
}

#[test]
fn issuer_audience_and_signature_must_match() {
    let key = EncodingKey::from_secret(SECRET);
    let hs = jsonwebtoken::Algorithm::HS256;
    let exp = now() + 60;
    let other_issuer = Claims {
        iss: "https://elsewhere.test".into(),
        ..claims(exp)
    };
    let other_audience = Claims {
        aud: "another-api".into(),
        ..claims(exp)
    };
    for token in [
        signed(&other_issuer, hs, &key),
        signed(&other_audience, hs, &key),
    ] {
        assert_eq!(
            hs256().verify(&token),
            Err(TokenError::WrongIssuerOrAudience)
        );
    }
    let forged = signed(
        &claims(exp),
        hs,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!"),
    );
    assert_eq!(hs256().verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn unsigned_garbled_and_other_algorithm_tokens_are_refused() {
    // `alg: none`: header and claims, no signature.
    let none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJhbGljZSJ9"
    );
    assert!(hs256().verify(&none).is_err());
    assert!(matches!(
        hs256().verify("not.a.token"),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(hs256().verify(""), Err(TokenError::Malformed(_))));
    let hs384 = signed(
        &claims(now() + 60),
        jsonwebtoken::Algorithm::HS384,
        &EncodingKey::from_secret(SECRET),
    );
    assert_eq!(hs256().verify(&hs384), Err(TokenError::WrongAlgorithm));
}

#[test]
fn subjects_must_be_short_visible_ascii() {
    assert!(Identity::new("alice@example.com", &[]).is_ok());
    for bad in ["", "has space", "ünïcode", &"x".repeat(MAX_SUBJECT_LEN + 1)] {
        assert_eq!(
            Identity::new(bad, &[]),
            Err(TokenError::BadSubject),
            "{bad:?}"
        );
    }
    let key = EncodingKey::from_secret(SECRET);
    let spaced = Claims {
        sub: "two words".into(),
        ..claims(now() + 60)
    };
    assert_eq!(
        hs256().verify(&signed(&spaced, jsonwebtoken::Algorithm::HS256, &key)),
        Err(TokenError::BadSubject)
    );
}

/// Identity providers write `aud` as a list and may leave out `iat`.
#[test]
fn a_token_with_an_audience_list_and_no_iat_is_accepted() {
    let claims = serde_json::json!({
        "sub": "alice",
        "iss": ISSUER,
        "aud": ["another-api", AUDIENCE],
        "exp": now() + 60,
        "scope": "admin",
    });
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let identity = hs256().verify(&token).unwrap();
    assert!(identity.has_scope(ADMIN_SCOPE));

    let without_sub = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60});
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &without_sub,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert!(matches!(
        hs256().verify(&token),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn short_secrets_are_refused() {
    let short = config(Algorithm::Hs256, VerificationKey::Secret(b"short".to_vec()));
    assert!(Verifier::new(&short).is_err());
    assert!(Minter::hs256(b"short", ISSUER, AUDIENCE).is_err());
}

#[test]
fn the_forwarded_identity_survives_metadata_and_its_absence_is_unauthenticated() {
    let identity = Identity::new("alice", &["admin"]).unwrap();
    let mut metadata = MetadataMap::new();
    identity.write_metadata(&mut metadata);
    assert_eq!(Identity::from_metadata(&metadata).unwrap(), identity);

    let missing = Identity::from_metadata(&MetadataMap::new()).unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
}

/// A key pair made by `openssl` for this test: (private PEM, public PEM).
fn key_pair(genpkey_args: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let private = Command::new("openssl")
        .arg("genpkey")
        .args(genpkey_args)
        .output()
        .expect("openssl genpkey runs");
    assert!(private.status.success(), "{private:?}");
    let dir = std::env::temp_dir().join(format!("shipshape-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.pem", genpkey_args.join("-").replace(':', "_")));
    std::fs::write(&path, &private.stdout).unwrap();
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&path)
        .output()
        .expect("openssl pkey runs");
    assert!(public.status.success(), "{public:?}");
    std::fs::remove_file(&path).unwrap();
    (private.stdout, public.stdout)
}

#[test]
fn rs256_and_es256_tokens_verify_with_the_public_key_alone() {
    let exp = now() + 60;
    let cases = [
        (
            Algorithm::Rs256,
            key_pair(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        ),
        (
            Algorithm::Es256,
            key_pair(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        ),
    ];
    for (algorithm, (private, public)) in cases {
        let signing = match algorithm {
            Algorithm::Rs256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let verifier =
            Verifier::new(&config(algorithm, VerificationKey::PublicKeyPem(public))).unwrap();
        let token = signed(&claims(exp), algorithm.jwt(), &signing);
        assert_eq!(verifier.verify(&token).unwrap().subject(), "alice");
        // An HS256 token "signed" with the public key's bytes is the
        // classic confusion attack: refused for its algorithm.
        let confused = signed(
            &claims(exp),
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(SECRET),
        );
        assert_eq!(verifier.verify(&confused), Err(TokenError::WrongAlgorithm));
    }
}

/// RFC 7515, section 4.1.11: extensions named in `crit` must be understood,
/// and the gateway understands none.
#[test]
fn a_token_naming_critical_header_extensions_is_refused() {
    let current = json_claims((now() + 60).into());
    // {"typ":"JWT","alg":"HS256","crit":["exp"]}, correctly signed.
    let critical = Header {
        crit: Some(vec!["exp".into()]),
        ..hs256_header()
    };
    assert_eq!(
        hs256().verify(&signed_json(&critical, &current)),
        Err(TokenError::CriticalHeader)
    );
    let empty = Header {
        crit: Some(Vec::new()),
        ..hs256_header()
    };
    assert_eq!(
        hs256().verify(&signed_json(&empty, &current)),
        Err(TokenError::CriticalHeader)
    );
    assert!(
        hs256()
            .verify(&signed_json(&hs256_header(), &current))
            .is_ok()
    );
}

#[test]
fn a_token_may_not_claim_a_lifetime_beyond_the_cap() {
    let key = EncodingKey::from_secret(SECRET);
    let hs = jsonwebtoken::Algorithm::HS256;
    let day = DEFAULT_MAX_LIFETIME.as_secs();
    assert!(
        hs256()
            .verify(&signed(&claims(now() + day), hs, &key))
            .is_ok(),
        "a day from its iat is within the cap"
    );
    for exp in [now() + day + 30 + 120, 1 << 63, u64::MAX] {
        assert_eq!(
            hs256().verify(&signed(&claims(exp), hs, &key)),
            Err(TokenError::LifetimeTooLong),
            "exp {exp}"
        );
    }
    // Current by the gateway's clock, but issued two days before it ends.
    let long_lived = Claims {
        iat: now() - 2 * day,
        ..claims(now() + 60)
    };
    assert_eq!(
        hs256().verify(&signed(&long_lived, hs, &key)),
        Err(TokenError::LifetimeTooLong)
    );
    // Without `iat`, only the gateway's clock counts; a fractional `exp`
    // is a NumericDate too (RFC 7519, section 2).
    let without_iat =
        |exp: serde_json::Value| hs256().verify(&signed_json(&hs256_header(), &json_claims(exp)));
    assert!(without_iat((now() + 3600).into()).is_ok());
    assert_eq!(
        without_iat(serde_json::json!(1.0e19)),
        Err(TokenError::LifetimeTooLong)
    );
    // The cap is the configured one.
    let hour = Verifier::new(&VerifierConfig {
        max_lifetime: Duration::from_secs(3600),
        ..config(Algorithm::Hs256, VerificationKey::Secret(SECRET.into()))
    })
    .unwrap();
    let minter = Minter::hs256(SECRET, ISSUER, AUDIENCE).unwrap();
    let two_hours = minter
        .mint("alice", &[], Duration::from_secs(7200))
        .unwrap();
    assert_eq!(hour.verify(&two_hours), Err(TokenError::LifetimeTooLong));
    let minute = minter.mint("alice", &[], Duration::from_secs(60)).unwrap();
    assert!(hour.verify(&minute).is_ok());
}

#[test]
fn a_zero_max_lifetime_is_refused() {
    let zero = VerifierConfig {
        max_lifetime: Duration::ZERO,
        ..config(Algorithm::Hs256, VerificationKey::Secret(SECRET.into()))
    };
    assert!(Verifier::new(&zero).is_err());
}

/// A time claim of the wrong type is said to be so, not to be missing.
#[test]
fn mistyped_time_claims_are_named_and_a_missing_exp_is_missing() {
    let not_a_time = |claim: &str| -> Result<Identity, TokenError> {
        Err(TokenError::Malformed(format!(
            "the `{claim}` claim must be a number of seconds since 1970"
        )))
    };
    let soon = now() + 60;
    for exp in [
        serde_json::json!(soon.to_string()),
        serde_json::json!({"secs": soon}),
        serde_json::json!([soon]),
        serde_json::json!(-1),
        serde_json::json!(true),
        serde_json::Value::Null,
    ] {
        assert_eq!(
            hs256().verify(&signed_json(&hs256_header(), &json_claims(exp.clone()))),
            not_a_time("exp"),
            "exp {exp}"
        );
    }
    let valid = json_claims(soon.into());
    for claim in ["nbf", "iat"] {
        let mut mistyped = valid.clone();
        mistyped[claim] = serde_json::json!("yesterday");
        assert_eq!(
            hs256().verify(&signed_json(&hs256_header(), &mistyped)),
            not_a_time(claim)
        );
    }

    let mut without_exp = valid;
    without_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        hs256().verify(&signed_json(&hs256_header(), &without_exp)),
        Err(TokenError::Malformed("the `exp` claim is missing".into()))
    );
}
