;;; amd-lsp.el --- settings shared by the amd-lsp Emacs set-ups  -*- lexical-binding: t; -*-

;; Required by amd-lsp-eglot.el and amd-lsp-lsp-mode.el; load one of those, not this.

;;; Code:

(defgroup amd-lsp nil
  "Offline code completions from a small local model."
  :group 'tools
  :prefix "amd-lsp-")

(defcustom amd-lsp-command '("amd-lsp" "--stdio")
  "The amd-lsp server command."
  :type '(repeat string))

(defcustom amd-lsp-model nil
  "Path of the GGUF model, or nil for the server's own choice."
  :type '(choice (const nil) file))

(defcustom amd-lsp-settings '(:maxTokens 64)
  "Server settings sent as initializationOptions (docs/configuration.md)."
  :type 'plist)

(defun amd-lsp-initialization-options ()
  "`amd-lsp-settings', with `amd-lsp-model' as `model' when set."
  (let ((settings (copy-sequence amd-lsp-settings)))
    (when amd-lsp-model
      (setq settings (plist-put settings :model (expand-file-name amd-lsp-model))))
    settings))

(provide 'amd-lsp)
;;; amd-lsp.el ends here
