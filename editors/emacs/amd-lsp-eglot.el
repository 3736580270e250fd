;;; amd-lsp-eglot.el --- amd-lsp completions through eglot  -*- lexical-binding: t; -*-

;; Emacs has no inline (ghost text) completion in its LSP clients: amd-lsp's suggestions come
;; through `textDocument/completion', i.e. `completion-at-point' and whatever shows it
;; (the *Completions* buffer, company, corfu).
;;
;; Usage (init.el):
;;   (add-to-list 'load-path "/path/to/amd-lsp/editors/emacs")
;;   (require 'amd-lsp-eglot)
;;   (setq amd-lsp-model "~/models/amd-llama-135m-code.q8_0.gguf")
;;   (add-hook 'python-mode-hook #'eglot-ensure)
;;
;; Eglot runs one server per buffer: for the modes in `amd-lsp-modes' amd-lsp replaces the
;; language's own server.  Use lsp-mode (amd-lsp-lsp-mode.el) to run it beside another one.

;;; Code:

(require 'eglot)
(require 'cl-lib)
(require 'amd-lsp)

(defcustom amd-lsp-modes
  '(python-mode python-ts-mode rust-mode rust-ts-mode c-mode c-ts-mode c++-mode c++-ts-mode
    go-mode go-ts-mode js-mode js-ts-mode typescript-mode typescript-ts-mode lua-mode sh-mode)
  "Major modes whose buffers eglot connects to amd-lsp."
  :type '(repeat symbol)
  :group 'amd-lsp)

(defclass amd-lsp-eglot-server (eglot-lsp-server) ()
  "The amd-lsp server, so that it gets its initializationOptions.")

(cl-defmethod eglot-initialization-options ((_server amd-lsp-eglot-server))
  "Send `amd-lsp-settings', with `amd-lsp-model' as `model' when set."
  (amd-lsp-initialization-options))

(defun amd-lsp-eglot-contact (&optional _interactive)
  "The server command line for eglot."
  (cons 'amd-lsp-eglot-server amd-lsp-command))

(add-to-list 'eglot-server-programs (cons amd-lsp-modes #'amd-lsp-eglot-contact))

(defun amd-lsp-status ()
  "Show amd-lsp's `amd/status' for the current buffer's server."
  (interactive)
  (let* ((server (eglot-current-server))
         (status (and server (jsonrpc-request server :amd/status nil))))
    (if (not status)
        (message "amd-lsp is not running for this buffer")
      (message "amd-lsp: %s, model %s, latency p50 %s ms"
               (plist-get status :state)
               (plist-get (plist-get status :model) :name)
               (plist-get (plist-get status :latencyMs) :p50))
      status)))

(provide 'amd-lsp-eglot)
;;; amd-lsp-eglot.el ends here
