;;; emacs_eglot.el --- drive amd-lsp from a real Emacs through eglot  -*- lexical-binding: t; -*-
;; Run: emacs --batch -l tests/editors/emacs_eglot.el BIN MODEL
;; Loads editors/emacs/amd-lsp-eglot.el, opens a Python buffer, connects eglot to the real
;; server, asks `completion-at-point' for candidates and accepts the suggestion.

(setq debug-on-error nil)
(package-initialize)
(add-to-list 'load-path (expand-file-name "editors/emacs"))
(require 'amd-lsp-eglot)

(defvar amd-test-passed 0)
(defun amd-test-fail (fmt &rest args)
  (princ (format "emacs_eglot: FAIL: %s\n" (apply #'format fmt args)) #'external-debugging-output)
  (kill-emacs 1))
(defun amd-test-check (name ok &optional detail)
  (unless ok (amd-test-fail "%s%s" name (if detail (format ": %S" detail) "")))
  (setq amd-test-passed (1+ amd-test-passed)))

(let* ((bin (nth 0 command-line-args-left))
       (model (nth 1 command-line-args-left))
       (dir (make-temp-file "amd-eglot" t))
       (file (expand-file-name "main.py" dir)))
  (setq command-line-args-left nil)
  (setq amd-lsp-command (list bin "--stdio")
        amd-lsp-model model
        amd-lsp-settings '(:debounceMs 0 :maxTokens 12))
  (with-temp-file file (insert "import os\n\n\ndef load(path):\n    return open(pa"))
  (find-file file)
  (python-mode)
  (goto-char (point-max))
  (insert "th")
  (let ((eglot-sync-connect t)
        (inhibit-message t))
    (apply #'eglot (eglot--guess-contact)))
  (let ((server (eglot-current-server)))
    (amd-test-check "eglot connected to amd-lsp" (and server (cl-typep server 'amd-lsp-eglot-server)))
    (amd-test-check "the server offers completion (no inline support in eglot)"
                    (eglot--server-capable :completionProvider))
    ;; Wait for the model.
    (let ((deadline (+ (float-time) 30)) status)
      (while (and (< (float-time) deadline)
                  (not (equal (plist-get (setq status (jsonrpc-request server :amd/status nil)) :state)
                              "ready")))
        (sleep-for 0.05))
      (amd-test-check "the model is ready" (equal (plist-get status :state) "ready") status)))
  ;; completion-at-point's table asks textDocument/completion.
  (let* ((capf (eglot-completion-at-point))
         (start (nth 0 capf)) (end (nth 1 capf))
         (cands (all-completions (buffer-substring-no-properties start end) (nth 2 capf))))
    (amd-test-check "completion-at-point spans the word before the cursor"
                    (equal (buffer-substring-no-properties start end) "path"))
    (amd-test-check "one suggestion that extends the word" (and (= (length cands) 1)
                                                               (string-prefix-p "path" (car cands)))
                    cands)
    ;; Accept it: completion-at-point inserts the only candidate and applies its text edit.
    (let ((completion-auto-help nil))
      (completion-at-point))
    (let ((line (buffer-substring-no-properties (line-beginning-position) (point-max))))
      (amd-test-check "accepting inserts the suggestion"
                      (and (string-prefix-p "    return open(path" line)
                           (> (length line) (length "    return open(path")))
                      line)
      (princ (format "emacs_eglot: accepted %S\n" line))))
  (amd-test-check "amd-lsp-status reports ready"
                  (equal (plist-get (let ((inhibit-message t)) (amd-lsp-status)) :state) "ready"))
  (let ((inhibit-message t)) (eglot-shutdown (eglot-current-server)))
  (set-buffer-modified-p nil)
  (princ (format "emacs_eglot: %d passed, 0 failed\n" amd-test-passed))
  (kill-emacs 0))
