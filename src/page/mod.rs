//! The page for testers (issue "A page for testers"): plain HTML, CSS and
//! JavaScript compiled into the binary with `include_str!` (no front-end
//! build, nothing fetched at run time), served by `plan-queue serve` at `/`
//! with its assets under `/ui/`. The page reads and acts only through the
//! public HTTP API, with the bearer token kept in the tab's `sessionStorage`.

use std::net::SocketAddr;

/// The page itself, served at `/`.
pub const INDEX_HTML: &str = include_str!("static/index.html");

/// The `Content-Security-Policy` of the page and its assets: everything from
/// this server only, no inline script or style, not framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// A file the page loads from `/ui/{name}`.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The last path segment, e.g. `app.js`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every asset of the page.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("static/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("static/icon.svg"),
    },
];

/// The asset called `name`, if the page has one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The address that opens the page signed in with `token`, for a server
/// listening on `bind_addr` (`BIND_ADDR`): `http://<host:port>/#token=<token>`.
/// The token travels in the fragment, which browsers never send to a server;
/// the page moves it into `sessionStorage` and removes it from the address
/// bar. A wildcard address (`0.0.0.0`, `[::]`) becomes the loopback one, which
/// a browser on the same machine can open.
pub fn sign_in_link(bind_addr: &str, token: &str) -> String {
    let host = match bind_addr.parse::<SocketAddr>() {
        Ok(mut addr) if addr.ip().is_unspecified() => {
            let loopback = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            addr.set_ip(loopback);
            addr.to_string()
        }
        _ => bind_addr.to_owned(),
    };
    format!("http://{host}/#token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_puts_the_token_in_the_fragment_of_the_bound_address() {
        assert_eq!(
            sign_in_link("127.0.0.1:8080", "a.b.c"),
            "http://127.0.0.1:8080/#token=a.b.c"
        );
        assert_eq!(
            sign_in_link("queue.internal:80", "t"),
            "http://queue.internal:80/#token=t"
        );
    }

    #[test]
    fn a_wildcard_bind_address_links_to_the_loopback_address() {
        assert_eq!(
            sign_in_link("0.0.0.0:8080", "t"),
            "http://127.0.0.1:8080/#token=t"
        );
        assert_eq!(sign_in_link("[::]:9000", "t"), "http://[::1]:9000/#token=t");
    }

    #[test]
    fn every_asset_the_page_names_is_served_and_nothing_comes_from_elsewhere() {
        for name in ["app.js", "app.css", "icon.svg"] {
            assert!(INDEX_HTML.contains(&format!("/ui/{name}")), "{name}");
            assert!(asset(name).is_some(), "{name}");
        }
        for text in ASSETS.iter().map(|a| a.body).chain([INDEX_HTML]) {
            assert!(
                !text.contains("//cdn") && !text.contains("https://"),
                "a remote load"
            );
        }
    }
}
