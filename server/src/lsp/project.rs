//! Where a document sits in the user's project: the workspace roots the client names in
//! `initialize`, and a document's path relative to its root (the file header of prompts for
//! models with repository tokens). URIs become paths here and nowhere else.

use std::path::{Path, PathBuf};

use amd_engine::RepoFile;
use tower_lsp_server::gen_lsp_types::{InitializeParams, RootPath, Uri, WorkspaceFolders};

/// The local path of a `file:` URI (`None` for other schemes: `untitled:`, remote files).
pub fn file_path(uri: &Uri) -> Option<PathBuf> {
    let url = url::Url::parse(uri.as_ref()).ok()?;
    if url.scheme() != "file" {
        return None;
    }
    url.to_file_path().ok()
}

/// The workspace roots: the workspace folders, else `rootUri`, else `rootPath` (deprecated in
/// LSP, still all that older clients send).
#[allow(deprecated)]
pub fn roots(params: &InitializeParams) -> Vec<PathBuf> {
    let folders = match &params.workspace_folders_initialize_params.workspace_folders {
        Some(WorkspaceFolders::WorkspaceFolderList(list)) => {
            list.iter().filter_map(|f| file_path(&f.uri)).collect()
        }
        _ => Vec::new(),
    };
    if !folders.is_empty() {
        return folders;
    }
    if let Some(root) = params.root_uri.as_ref().and_then(file_path) {
        return vec![root];
    }
    match &params.root_path {
        Some(RootPath::String(p)) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => Vec::new(),
    }
}

/// The document's project and path in it: under the deepest root that holds it; outside every
/// root, its folder stands for the project.
pub fn repo_file(uri: &Uri, roots: &[PathBuf]) -> Option<RepoFile> {
    let path = file_path(uri)?;
    let root = roots
        .iter()
        .filter(|r| path.starts_with(r) && path != **r)
        .max_by_key(|r| r.components().count())
        .cloned()
        .or_else(|| path.parent().map(Path::to_path_buf))?;
    let relative = path.strip_prefix(&root).ok()?;
    let repo = root.file_name().map_or_else(
        || "project".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let path = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    (!path.is_empty()).then_some(RepoFile { repo, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, roots: &[&str], expect: Option<(&str, &str)>) {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        let got = repo_file(&Uri::from(uri), &roots);
        assert_eq!(
            got.as_ref().map(|f| (f.repo.as_str(), f.path.as_str())),
            expect,
            "{uri}"
        );
    }

    #[test]
    fn a_document_is_named_relative_to_its_deepest_root() {
        check(
            "file:///home/u/proj/src/main.rs",
            &["/home/u/proj"],
            Some(("proj", "src/main.rs")),
        );
        check(
            "file:///home/u/proj/sub/x.py",
            &["/home/u/proj", "/home/u/proj/sub"],
            Some(("sub", "x.py")),
        );
        // Outside every root: the folder stands for the project; percent-escapes decoded.
        check(
            "file:///tmp/my%20dir/a%2Bb.py",
            &["/home/u/proj"],
            Some(("my dir", "a+b.py")),
        );
        check("untitled:Untitled-1", &["/home/u/proj"], None);
        check("not a uri", &[], None);
    }
}
