//! UPnP IGD (the parts fybrk uses) as pure text handling: the SSDP search, finding the
//! `WANIPConnection` (or `WANPPPConnection`) control URL in the gateway's description, and the
//! SOAP calls `AddPortMapping`, `DeletePortMapping` and `GetExternalIPAddress`. The exchange
//! itself (UDP multicast, HTTP over TCP) is in the driver.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::DecodeError;

/// The SSDP multicast group and port.
pub const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);

/// The services that can map ports, best first (IGD v2's, then v1's; PPP on DSL routers).
pub const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// Where the SOAP calls go: the gateway's HTTP server and the service's control path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The HTTP server.
    pub addr: SocketAddr,
    /// The control URL's path.
    pub path: String,
    /// The service type (one of [`SERVICES`]).
    pub service: &'static str,
}

/// The SSDP search for an Internet Gateway Device (v1 search targets are answered by v2
/// devices too). `MX: 1`: devices answer within a second.
pub fn m_search() -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\
         ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
    )
    .into_bytes()
}

/// The `LOCATION` of an SSDP answer (`HTTP/1.1 200 OK` with that header), parsed as an
/// `http://` URL.
pub fn parse_search_answer(datagram: &[u8]) -> Result<(SocketAddr, String), DecodeError> {
    let text = std::str::from_utf8(datagram).map_err(|_| DecodeError::Text)?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(DecodeError::Text);
    }
    let location = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim())
        .ok_or(DecodeError::Text)?;
    parse_http_url(location)
}

/// `http://A.B.C.D[:PORT][/PATH]` as address and path (gateways name themselves by address).
pub fn parse_http_url(url: &str) -> Result<(SocketAddr, String), DecodeError> {
    let rest = url.strip_prefix("http://").ok_or(DecodeError::Text)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = match authority.rsplit_once(':') {
        Some((host, port)) => SocketAddr::new(
            host.parse().map_err(|_| DecodeError::Text)?,
            port.parse().map_err(|_| DecodeError::Text)?,
        ),
        None => SocketAddr::new(authority.parse().map_err(|_| DecodeError::Text)?, 80),
    };
    Ok((addr, path))
}

/// The control URL of the best port-mapping service in a device description (the XML at the
/// search answer's `LOCATION`, which came from `base`). Plain text search, no XML parser: the
/// description is small and only `serviceType` and the `controlURL` after it matter.
pub fn parse_description(xml: &str, base: SocketAddr) -> Result<Control, DecodeError> {
    for service in SERVICES {
        let needle = format!("<serviceType>{service}</serviceType>");
        let Some(at) = xml.find(&needle) else {
            continue;
        };
        let after = &xml[at + needle.len()..];
        // The controlURL of the same <service> element: before its closing tag.
        let end = after.find("</service>").unwrap_or(after.len());
        let Some(url) = element(&after[..end], "controlURL") else {
            continue;
        };
        let (addr, path) = if url.starts_with("http://") {
            parse_http_url(url)?
        } else if url.starts_with('/') {
            (base, url.to_string())
        } else {
            (base, format!("/{url}"))
        };
        return Ok(Control {
            addr,
            path,
            service,
        });
    }
    Err(DecodeError::NoService)
}

/// The text of the first `<name>...</name>` in `xml` (a namespace prefix on the tag is allowed
/// only as `<u:name>` style for answers, see [`soap_value`]).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
}

/// A SOAP call's HTTP body for `action` of `service` with `args` (names and values, values
/// already free of markup).
pub fn soap_body(service: &str, action: &str, args: &[(&str, String)]) -> String {
    let mut inner = String::new();
    for (k, v) in args {
        inner.push_str(&format!("<{k}>{v}</{k}>"));
    }
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"{service}\">{inner}</u:{action}></s:Body></s:Envelope>\r\n"
    )
}

/// `AddPortMapping` of UDP `external_port` to `client:internal_port` for `lease_secs`.
pub fn add_port_mapping_args(
    external_port: u16,
    client: Ipv4Addr,
    internal_port: u16,
    lease_secs: u32,
) -> Vec<(&'static str, String)> {
    vec![
        ("NewRemoteHost", String::new()),
        ("NewExternalPort", external_port.to_string()),
        ("NewProtocol", "UDP".to_string()),
        ("NewInternalPort", internal_port.to_string()),
        ("NewInternalClient", client.to_string()),
        ("NewEnabled", "1".to_string()),
        ("NewPortMappingDescription", "fybrk".to_string()),
        ("NewLeaseDuration", lease_secs.to_string()),
    ]
}

/// `DeletePortMapping` of UDP `external_port`.
pub fn delete_port_mapping_args(external_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NewRemoteHost", String::new()),
        ("NewExternalPort", external_port.to_string()),
        ("NewProtocol", "UDP".to_string()),
    ]
}

/// The HTTP request of a SOAP call.
pub fn soap_request(control: &Control, action: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHOST: {}\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n\
         SOAPACTION: \"{}#{action}\"\r\nCONTENT-LENGTH: {}\r\nCONNECTION: close\r\n\r\n{body}",
        control.path,
        control.addr,
        control.service,
        body.len()
    )
    .into_bytes()
}

/// The HTTP GET of a description.
pub fn get_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHOST: {addr}\r\nCONNECTION: close\r\n\r\n").into_bytes()
}

/// A whole HTTP answer (read until the server closed) as status code and body.
pub fn parse_http_answer(raw: &[u8]) -> Result<(u16, &str), DecodeError> {
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::Text)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or(DecodeError::Text)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError::Text)?;
    Ok((status, body))
}

/// The value of the answer element `name` in a SOAP answer body (with or without a namespace
/// prefix on the tag, as gateways differ).
pub fn soap_value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    if let Some(v) = element(body, name) {
        return Some(v);
    }
    // `<m:NewExternalIPAddress>`: find `:name>` and the matching close.
    let open = format!(":{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find("</")?;
    Some(body[start..start + len].trim())
}

/// The UPnP error code of a failed call (HTTP 500 with a SOAP fault), if there is one.
pub fn soap_error(body: &str) -> Option<u16> {
    soap_value(body, "errorCode")?.parse().ok()
}
