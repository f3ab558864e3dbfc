//! A bearer filter with `issuer` and `audience` set requires both claims, of the right
//! type: a correctly signed token that lacks them, or carries them as another JSON type,
//! is refused like one naming someone else.

use anyhow::Result;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{HttpRequest, RoutesDir, SECRET, Server, guests, jwt, now};

async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[[route]]
match = "/x/*"
filters = [{{ kind = "bearer", algorithm = "HS256", secret-file = "secret.txt", issuer = "https://issuer.example", audience = "wshost", required = true }}]
controller = "{}"
"#,
        guests().probe.display()
    ))?;
    dir.write("secret.txt", SECRET.as_bytes())?;
    Server::start_in(dir).await
}

/// The status and body the server answers a token with `claims`.
async fn answer(server: &Server, claims: Value) -> Result<(u16, String)> {
    let token = jwt(Algorithm::HS256, &claims);
    let request = HttpRequest::upgrade("/x/1").header("Authorization", &format!("Bearer {token}"));
    Ok(match server.attempt(&request).await? {
        Ok((response, _)) => (response.status, String::new()),
        Err(response) => (response.status, response.body_text().trim().to_owned()),
    })
}

fn token(iss: Option<Value>, aud: Option<Value>) -> Value {
    let mut claims = json!({ "sub": "ann", "exp": now() + 3600 });
    if let Some(iss) = iss {
        claims["iss"] = iss;
    }
    if let Some(aud) = aud {
        claims["aud"] = aud;
    }
    claims
}

#[tokio::test]
async fn configured_audience_and_issuer_are_required_and_typed() -> Result<()> {
    let server = server().await?;
    let iss = || Some(json!("https://issuer.example"));
    assert_eq!(
        answer(&server, token(iss(), Some(json!("wshost"))))
            .await?
            .0,
        101
    );
    assert_eq!(
        answer(&server, token(iss(), Some(json!(["other", "wshost"]))))
            .await?
            .0,
        101,
        "an array audience that lists us"
    );

    let wrong_audience = (401, "invalid token: wrong audience".to_owned());
    for aud in [
        None,
        Some(Value::Null),
        Some(json!(123)),
        Some(json!("other")),
        Some(json!(["other"])),
        Some(json!(["wshost", 1])),
    ] {
        assert_eq!(
            answer(&server, token(iss(), aud.clone())).await?,
            wrong_audience,
            "aud {aud:?}"
        );
    }
    let wrong_issuer = (401, "invalid token: wrong issuer".to_owned());
    for iss in [
        None,
        Some(Value::Null),
        Some(json!(7)),
        Some(json!(["https://issuer.example"])),
        Some(json!("https://evil.example")),
    ] {
        assert_eq!(
            answer(&server, token(iss.clone(), Some(json!("wshost")))).await?,
            wrong_issuer,
            "iss {iss:?}"
        );
    }
    Ok(())
}
