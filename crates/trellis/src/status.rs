//! `trellis status`: tables of service networks, services, target groups and targets, read
//! through the Lattice API of a running server.

use serde_json::Value;

use crate::client::Client;

/// Prints the tables.
pub async fn run(client: &Client) -> anyhow::Result<()> {
    let networks = client.list_all("GET", "/servicenetworks", None).await?;
    let services = client.list_all("GET", "/services", None).await?;
    let groups = client.list_all("GET", "/targetgroups", None).await?;
    let mut out = String::new();

    out.push_str(&table(
        "SERVICE NETWORKS",
        &["ID", "NAME", "VPCS", "SERVICES"],
        networks.iter().map(|n| {
            vec![s(n, "id"), s(n, "name"), s(n, "numberOfAssociatedVPCs"), s(n, "numberOfAssociatedServices")]
        }),
    ));
    out.push_str(&table(
        "SERVICES",
        &["ID", "NAME", "STATUS", "DNS NAME"],
        services.iter().map(|v| vec![s(v, "id"), s(v, "name"), s(v, "status"), s(&v["dnsEntry"], "domainName")]),
    ));
    out.push_str(&table(
        "TARGET GROUPS",
        &["ID", "NAME", "TYPE", "PROTOCOL", "PORT", "VPC"],
        groups.iter().map(|g| {
            vec![s(g, "id"), s(g, "name"), s(g, "type"), s(g, "protocol"), s(g, "port"), s(g, "vpcIdentifier")]
        }),
    ));
    let mut targets = Vec::new();
    for group in &groups {
        let id = s(group, "id");
        for t in
            client.list_all("POST", &format!("/targetgroups/{id}/listtargets"), Some(serde_json::json!({}))).await?
        {
            targets.push(vec![id.clone(), s(&t, "id"), s(&t, "port"), s(&t, "status"), s(&t, "reasonCode")]);
        }
    }
    out.push_str(&table("TARGETS", &["TARGET GROUP", "ID", "PORT", "STATUS", "REASON"], targets.into_iter()));
    print!("{out}");
    Ok(())
}

/// Prints the live nodes: name, roles, endpoint, the revision each data plane serves and how
/// many revisions it is behind the store.
pub async fn nodes(client: &Client) -> anyhow::Result<()> {
    let answer = client.call("GET", "/_trellis/nodes", None).await?;
    let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
    let rows = nodes.iter().map(|n| {
        let roles = n["roles"]
            .as_array()
            .map_or_else(String::new, |r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
        let state = if n["reachable"] == Value::Bool(true) {
            "up".to_owned()
        } else {
            format!("unreachable: {}", s(n, "error"))
        };
        vec![s(n, "node"), roles, s(n, "endpoint"), s(n, "revision"), s(n, "lag"), state]
    });
    print!("{}", table("NODES", &["NODE", "ROLES", "ENDPOINT", "REVISION", "LAG", "STATE"], rows));
    Ok(())
}

/// A member as text (`-` when absent).
fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// A titled table with aligned columns; "(none)" when empty.
fn table(title: &str, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = format!("{title}\n");
    if rows.is_empty() {
        out.push_str("  (none)\n\n");
        return out;
    }
    out.push_str(&line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table("T", &["A", "BB"], vec![vec!["xxx".to_owned(), "y".to_owned()]].into_iter());
        assert_eq!(t, "T\nA    BB\nxxx  y\n\n");
        assert_eq!(super::table("T", &["A"], std::iter::empty()), "T\n  (none)\n\n");
    }
}
